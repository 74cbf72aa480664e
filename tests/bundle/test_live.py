"""End to end: a real Prometheus scrapes a real exporter watching real Celery workers.

Two demo workers run on Redis while the demo producer sends mixed traffic; the exporter
exports spans to a real OTLP receiver and completes results from the result backend.
Prometheus (Debian's binary) scrapes it every second, with the alert rules loaded, along
with an exporter that cannot reach its broker and a target where nothing listens, so
the exporter alerts have something to fire on. Every query of every dashboard and alert
must then find data, and killing the workers and the OTLP receiver must fire the
alerts about them.

The tests share one cluster; the last one kills its workers, so it stays last.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
import redis
import yaml

from tests.bundle.helpers import (
    ALERTS,
    PROMETHEUS_SERIES,
    REDIS_BACKEND,
    TEMPO_QUERIES,
    TRACEQL_ATTRIBUTE,
    alert_rules,
    as_promql,
    dashboard_queries,
    datasource_queries,
    metric_names,
    promql_queries,
    require_redis,
    require_tool,
    selectors,
)
from tests.otlp_receiver import GrpcReceiver
from tests.support import Exporter, Proc, Worker, child_env, free_port, http_get, wait_for

#: How long data may take to show: rates need a few scrapes, rare tasks a few seconds.
DATA_DEADLINE = 120
#: Alert thresholds a healthy demo never reaches, relaxed so the rest of the expression
#: (selectors, label matching, aggregation) is still checked against live data.
RELAXED = {
    "CeleryTaskStuck": [("> 1800", ">= 0")],
    "CeleryQueueBacklogGrowing": [("> 100", ">= 0"), ("> 0", "> -Inf")],
    "CeleryQueueWaitHigh": [("> 60", ">= 0")],
    "CeleryExporterEventLagHigh": [("> 30", ">= 0")],
}
#: What Grafana puts for ``$__tags`` in traces-to-metrics queries, from a demo.fail span.
SPAN_TAGS = 'name="demo.fail"'
#: Alerts the cluster makes true from the start, and those it must keep silent.
FIRING = {"CeleryTaskFailureRatioHigh", "CeleryExporterDown", "CeleryExporterBrokerDisconnected"}
SILENT = {"CeleryWorkerDown", "CeleryWorkersAllDown", "CeleryExporterSpansDropped"}


@dataclass
class Cluster:
    workers: list[Worker]
    exporter: Exporter
    unconnected: Exporter
    nowhere: str
    receiver: GrpcReceiver

    @property
    def instance(self) -> str:
        return f"127.0.0.1:{self.exporter.port}"


@dataclass
class Prometheus:
    url: str

    def get(self, path: str, **params: object) -> object:
        status, body, _ = http_get(f"{self.url}{path}?{urlencode(params)}")
        assert status == 200, f"{path} {params}: {body}"
        return json.loads(body)["data"]

    def query(self, promql: str) -> list[dict]:
        data = self.get("/api/v1/query", query=promql)
        assert isinstance(data, dict)
        return data["result"]

    def labels(self, promql: str, label: str) -> set[str]:
        return {series["metric"].get(label, "") for series in self.query(promql)}


def settle(pending: Callable[[], Collection], timeout: float, what: str) -> None:
    """Poll until ``pending()`` is empty; fail naming what still is after ``timeout``."""
    deadline = time.monotonic() + timeout
    left = pending()
    while left:
        if time.monotonic() > deadline:
            raise AssertionError(f"after {timeout}s still {what}:\n" + "\n".join(sorted(left)))
        time.sleep(0.5)
        left = pending()


def send_in_flight(broker: str, count: int = 4, seconds: float = 4) -> None:
    """Slow tasks the workers take before the exporter starts.

    The exporter sees only their end, so it must infer the states it missed.
    """
    code = "from clearly_exporter.demo.app import slow\n"
    code += f"for _ in range({count}): slow.delay({seconds})"
    env = child_env(CLEARLY_DEMO_BROKER=broker, CLEARLY_DEMO_BACKEND=REDIS_BACKEND)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    client = redis.Redis.from_url(broker)
    wait_for(lambda: client.llen("celery") == 0, 60, "the workers taking the slow tasks")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    broker = require_redis()
    tmp = tmp_path_factory.mktemp("live")
    parts: list = []
    try:
        receiver = GrpcReceiver().start()
        parts.append(receiver)
        workers = [Worker(broker, "celery", tmp, backend=REDIS_BACKEND).start() for _ in "ab"]
        parts.extend(workers)
        send_in_flight(broker)
        tracing = ["--otlp-endpoint", receiver.endpoint, "--otlp-timeout", "1s"]
        args = ["--worker-timeout", "3s", "--queue", "celery", "--backend", REDIS_BACKEND]
        exporter = Exporter(broker, tmp, args=[*args, *tracing]).start()
        parts.append(exporter)
        unconnected = Exporter("redis://127.0.0.1:1/0", tmp).start(wait_healthy=False)
        parts.append(unconnected)
        env = child_env(
            CLEARLY_DEMO_BROKER=broker, CLEARLY_DEMO_BACKEND=REDIS_BACKEND, CLEARLY_DEMO_RATE="8"
        )
        command = [sys.executable, "-m", "clearly_exporter.demo.producer"]
        parts.append(Proc(command, env, tmp / "producer.log").start())
        yield Cluster(workers, exporter, unconnected, f"127.0.0.1:{free_port()}", receiver)
    finally:
        for part in reversed(parts):
            part.stop()


@pytest.fixture(scope="module")
def prometheus(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    binary = require_tool("prometheus", "Debian package prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    targets = [cluster.instance, f"127.0.0.1:{cluster.unconnected.port}", cluster.nowhere]
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "clearly-exporter", "static_configs": [{"targets": targets}]}
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    command = [
        binary,
        f"--config.file={tmp / 'prometheus.yml'}",
        f"--storage.tsdb.path={tmp / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
        "--log.level=warn",
    ]
    proc = Proc(command, child_env(), tmp / "prometheus.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_get(url + "/-/ready")[0] == 200, 60, "prometheus ready")
        yield Prometheus(url)
    finally:
        proc.stop()


def grafana_regex(value: str) -> str:
    """A value as Grafana puts it in a PromQL regex: specials escaped, in a PromQL string."""
    return re.sub(r"([.*+?^${}()|\[\]\\])", r"\\\\\1", value)


def dashboard_values(cluster: Cluster) -> dict[str, str]:
    """Concrete values for the dashboards' variables: two task types, three states."""
    return {
        "queue": "celery",
        "task": "(" + "|".join(grafana_regex(t) for t in ("demo.add", "demo.fail")) + ")",
        "state": "(SUCCESS|FAILURE|STARTED)",
        "worker": grafana_regex(cluster.workers[0].name),
        "instance": grafana_regex(cluster.instance),
        "__rate_interval": "30s",
        "__range": "5m",
    }


def with_data(prometheus: Prometheus, exprs: dict[str, str], timeout: float) -> None:
    """Wait until every expression returns at least one series."""
    pending = dict(exprs)

    def empty() -> set[str]:
        for where, expr in list(pending.items()):
            if prometheus.query(expr):
                del pending[where]
        return {f"{where}: {expr}" for where, expr in pending.items()}

    settle(empty, timeout, "no data for")


def and_selectors(queries: dict[str, str]) -> dict[str, str]:
    """The queries and each of their selectors: ``... or vector(0)`` cannot hide a typo."""
    out = dict(queries)
    for where, expr in queries.items():
        for selector in selectors(expr):
            out[f"{where} [{selector}]"] = selector
    return out


def test_the_exporter_serves_every_metric_the_bundle_uses(cluster: Cluster) -> None:
    used = set().union(*(metric_names(q.text) for q in promql_queries())) - PROMETHEUS_SERIES

    def missing() -> set[str]:
        return used - {name for name, _ in cluster.exporter.scrape()}

    settle(missing, DATA_DEADLINE, "not served:")


def test_every_dashboard_query_returns_data(cluster: Cluster, prometheus: Prometheus) -> None:
    values = dashboard_values(cluster)
    queries: dict[str, str] = {}
    for query in [*dashboard_queries(), *datasource_queries()]:
        if query.language == "traceql":
            continue
        promql = as_promql(query, values).replace("$__tags", SPAN_TAGS)
        assert "$" not in promql, f"{query.where}: unsubstituted variable in {promql}"
        queries[query.where] = promql
    with_data(prometheus, and_selectors(queries), DATA_DEADLINE)


def test_every_alert_expression_has_live_data_behind_it(
    cluster: Cluster, prometheus: Prometheus
) -> None:
    queries = {}
    for name, rule in alert_rules().items():
        expr = rule["expr"]
        for threshold, relaxed in RELAXED.get(name, []):
            assert threshold in expr, f"{name}: {threshold!r} is gone from the expression"
            expr = expr.replace(threshold, relaxed)
        if name in RELAXED:
            queries[f"alert {name} (thresholds relaxed)"] = expr
        for selector in selectors(rule["expr"]):
            queries[f"alert {name} [{selector}]"] = selector
    with_data(prometheus, queries, DATA_DEADLINE)


def test_alerts_fire_on_what_is_wrong_and_only_on_that(
    cluster: Cluster, prometheus: Prometheus
) -> None:
    rules = alert_rules()
    assert FIRING | SILENT | set(RELAXED) == set(rules)
    expected = {
        "CeleryTaskFailureRatioHigh": ("name", {"demo.fail"}),
        "CeleryExporterDown": ("instance", {cluster.nowhere}),
        "CeleryExporterBrokerDisconnected": (
            "instance",
            {f"127.0.0.1:{cluster.unconnected.port}"},
        ),
    }

    def wrong() -> set[str]:
        return {
            f"{name}: {prometheus.labels(rules[name]['expr'], label)} != {values}"
            for name, (label, values) in expected.items()
            if prometheus.labels(rules[name]["expr"], label) != values
        }

    settle(wrong, DATA_DEADLINE, "not firing as expected:")
    # A heartbeat late by more than a second (a loaded machine) reads as a short death
    # with --worker-timeout 3s: silent means silent again at the next heartbeat.
    for name in SILENT:
        wait_for(lambda n=name: not prometheus.query(rules[n]["expr"]), 10, f"{name} silent")
    loaded = prometheus.get("/api/v1/rules", type="alert")
    assert isinstance(loaded, dict)
    assert {r["name"] for g in loaded["groups"] for r in g["rules"]} == set(rules)


def test_runtime_exemplars_name_exported_traces(cluster: Cluster, prometheus: Prometheus) -> None:
    started = time.time()

    def linked() -> set[str]:
        data = prometheus.get(
            "/api/v1/query_exemplars",
            query="celery_task_runtime_seconds_bucket",
            start=started - 600,
            end=time.time(),
        )
        assert isinstance(data, list)
        traces = {e["labels"].get("trace_id") for s in data for e in s["exemplars"]}
        return traces & {span.trace_id for span in cluster.receiver.snapshot()}

    wait_for(linked, DATA_DEADLINE, "a runtime exemplar naming an exported trace")


def test_the_traceql_of_the_bundle_matches_real_spans(cluster: Cluster) -> None:
    markdown = TEMPO_QUERIES.read_text()
    texts = [q.text for q in dashboard_queries() if q.language == "traceql"]
    texts += re.findall(r"`(\{[^`]*\})`", markdown)
    attributes = set().union(*(TRACEQL_ATTRIBUTE.findall(text) for text in texts))
    values = {
        key: set(re.findall(rf'span\.{re.escape(key)} = "([^"]+)"', markdown))
        for key in ("celery.task.name", "celery.task.state")
    }
    assert attributes and all(values.values())

    def missing() -> set[str]:
        spans = cluster.receiver.snapshot()
        seen = set().union(*(span.attributes for span in spans))
        out = {f"attribute {a}" for a in attributes - seen}
        for key, wanted in values.items():
            found = {span.attributes.get(key) for span in spans}
            out |= {f"{key} = {value!r}" for value in wanted - found}
        return out

    settle(missing, DATA_DEADLINE, "in no exported span:")
    spans = cluster.receiver.snapshot()
    assert all(span.name == f"run {span.attributes['celery.task.name']}" for span in spans)
    failed = [s for s in spans if s.attributes["celery.task.name"] == "demo.fail"]
    assert failed and all(span.status == 2 for span in failed), "status = error finds failures"
    assert any(s.attributes["celery.task.retries"] > 0 for s in spans)
    roots = [
        s for s in spans if s.attributes["celery.task.root_id"] == s.attributes["celery.task.id"]
    ]
    assert roots and all(
        s.trace_id == s.attributes["celery.task.id"].replace("-", "") for s in roots
    )


def test_dead_workers_and_a_lost_trace_endpoint_fire_their_alerts(
    cluster: Cluster, prometheus: Prometheus
) -> None:
    """Last: it kills the cluster's workers and its OTLP receiver."""
    rules = alert_rules()
    cluster.receiver.stop()
    wait_for(
        lambda: (
            cluster.instance
            in prometheus.labels(rules["CeleryExporterSpansDropped"]["expr"], "instance")
        ),
        60,
        "CeleryExporterSpansDropped once spans cannot be exported",
    )
    victim, survivor = cluster.workers
    killed = time.monotonic()
    victim.kill()
    wait_for(
        lambda: prometheus.labels(rules["CeleryWorkerDown"]["expr"], "worker") == {victim.name},
        30,
        f"CeleryWorkerDown's expression naming {victim.name}",
    )
    firing = f'ALERTS{{alertname="CeleryWorkerDown", alertstate="firing", worker="{victim.name}"}}'
    wait_for(lambda: prometheus.query(firing), 60, "CeleryWorkerDown firing")
    assert time.monotonic() - killed < 60, "CeleryWorkerDown must fire within a minute"
    wait_for(
        lambda: not prometheus.query(rules["CeleryWorkersAllDown"]["expr"]),
        10,
        "CeleryWorkersAllDown silent while a worker lives",
    )
    survivor.kill()
    wait_for(
        lambda: (
            prometheus.labels(rules["CeleryWorkersAllDown"]["expr"], "instance")
            == {cluster.instance}
        ),
        30,
        "CeleryWorkersAllDown's expression once every worker is dead",
    )
