"""The cached exposition: what prometheus_client would render from the same state, in
both formats, kept up to date as series change, appear and go."""

from __future__ import annotations

import os
import subprocess

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text
from prometheus_client.samples import Exemplar

from clearly_exporter.engine import Engine, EngineConfig
from clearly_exporter.engine.slab import Slab
from clearly_exporter.metrics import exposition
from clearly_exporter.metrics.collector import EngineCollector
from clearly_exporter.metrics.exposition import (
    CachedFamily,
    ScalarFamily,
    SeriesCache,
    exemplar_text,
    generate,
    generate_chunks,
    number,
)
from clearly_exporter.metrics.rows import AgeFamily, HistogramFamily, RowsCache
from clearly_exporter.source import BrokerHealth
from tests.bundle.helpers import require_tool
from tests.engine.events import (
    T0,
    failed,
    received,
    retried,
    sent,
    started,
    succeeded,
    worker_event,
)

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
HOSTILE = 'quo"te\nnew\\line ünï€ode {a="b"} # 1'
#: Differs between two collections of the same state.
SCRAPE_DURATION = "clearly_exporter_scrape_duration_seconds"


class Cluster:
    """An engine fed events, a registry around it, and a clock the test moves; its slabs
    shared, as the daemon's, so that a render process can map them."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.engine = Engine(
            config, trace_of=lambda root: root.replace("-", "").ljust(32, "0"), shared=True
        )
        self.now = T0
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            EngineCollector(self.engine, BrokerHealth(), None, clock=lambda: self.now)
        )

    def feed(self, *events: dict) -> None:
        for event in events:
            self.now = max(self.now, event["timestamp"]) + 0.001
            self.engine.handle(event, self.now)

    def task(self, uuid: str, name: str = "app.add", queue: str = "q1", fail: bool = False) -> None:
        t = self.now
        if fail:
            end = failed(uuid, t + 2.5, exception=HOSTILE + "('x')")
        else:
            end = succeeded(uuid, t + 0.07, runtime=0.07)
        self.feed(sent(uuid, t, name=name, queue=queue), received(uuid, t), started(uuid, t), end)


def exemplar(ex: Exemplar | None) -> tuple | None:
    return None if ex is None else (tuple(ex.labels.items()), ex.value, str(ex.timestamp))


def families(parse, text: str) -> dict[str, tuple]:
    """Per family: type, help and its samples as a set, the scrape's own duration left out."""
    out = {}
    for family in parse(text):
        samples = {
            (s.name, tuple(sorted(s.labels.items())), s.value, exemplar(s.exemplar))
            for s in family.samples
            if s.name != SCRAPE_DURATION
        }
        out[family.name] = (family.type, family.documentation, samples)
    return out


def assert_as_prometheus_client_renders(cluster: Cluster, *formats: str) -> None:
    """Our exposition and prometheus_client's of the same state parse the same."""
    for accept in formats or ("", OPENMETRICS):
        ours, content_type = generate(cluster.registry, accept)
        if accept:
            assert content_type.startswith("application/openmetrics-text; version=1.0.0")
            parse, theirs = parse_om, generate_openmetrics(cluster.registry)
        else:
            assert content_type.startswith("text/plain; version=0.0.4")
            parse, theirs = parse_text, generate_latest(cluster.registry)
        assert families(parse, ours.decode()) == families(parse, theirs.decode())


def busy_cluster() -> Cluster:
    cluster = Cluster()
    cluster.task("a")
    cluster.task("b", name=HOSTILE, queue=HOSTILE, fail=True)
    cluster.feed(received("c", cluster.now, name="app.slow"), started("c", cluster.now))
    cluster.feed(sent("d", cluster.now), received("d", cluster.now), retried("d", cluster.now))
    cluster.feed(worker_event("worker-heartbeat", "celery@w1", cluster.now))
    cluster.feed(worker_event("worker-heartbeat", HOSTILE, cluster.now, sw_ver=HOSTILE))
    return cluster


def test_both_formats_say_what_prometheus_client_says_of_the_same_state():
    assert_as_prometheus_client_renders(busy_cluster())


def test_series_that_change_appear_or_go_are_rendered_anew():
    cluster = busy_cluster()
    assert_as_prometheus_client_renders(cluster)
    cluster.task("f")  # counters, histograms and in-progress gauges of app.add move
    cluster.task("g", name="app.new", queue="q2")  # new series in every family
    cluster.now += 7  # every oldest-in-progress age grows
    assert_as_prometheus_client_renders(cluster)
    cluster.feed(worker_event("worker-offline", "celery@w1", cluster.now))
    assert_as_prometheus_client_renders(cluster)
    cluster.engine.workers.purge_after = 0.0
    cluster.now += 1
    text = generate(cluster.registry, "")[0].decode()
    assert 'worker="celery@w1"' not in text, "a purged worker's series are gone"
    assert_as_prometheus_client_renders(cluster)


def test_blocks_of_a_few_series_grow_change_and_go(monkeypatch):
    """Every family spans several blocks; new series fill the last one and start others."""
    monkeypatch.setattr(CachedFamily, "block", 2)
    monkeypatch.setattr(HistogramFamily, "block", 3)
    test_series_that_change_appear_or_go_are_rendered_anew()
    cluster = busy_cluster()
    for i in range(7):
        cluster.task(f"n{i}", name=f"app.t{i % 3}", queue=f"q{i % 2}", fail=i % 4 == 0)
        assert_as_prometheus_client_renders(cluster)


def test_a_scrape_in_blocks_is_the_body():
    cluster = busy_cluster()
    chunks, content_type = generate_chunks(cluster.registry, "")
    assert len(chunks) > 10 and all(type(c) is bytes for c in chunks)
    assert content_type == generate(cluster.registry, "")[1]
    body, _ = generate(cluster.registry, "")
    assert [line for line in b"".join(chunks).splitlines() if b"scrape_duration" not in line] == [
        line for line in body.splitlines() if b"scrape_duration" not in line
    ]


def test_percent_signs_in_label_values_are_not_placeholders():
    cluster = Cluster()
    cluster.task("a", name="100%d %s %% %(x)a", queue="%")
    assert_as_prometheus_client_renders(cluster)
    text = generate(cluster.registry, "")[0].decode()
    assert 'celery_tasks_total{name="100%d %s %% %(x)a",queue="%",state="SUCCESS"} 1' in text


def test_values_written_as_prometheus_client_writes_them():
    """Non-finite and odd-typed values, and sums Go writes with an exponent."""
    keys = [("a",), ("b",), ("c",), ("d",)]
    values = [float("inf"), 2, 0.5, float("nan")]
    caches = (SeriesCache(), SeriesCache())
    out: list[bytes] = []
    ScalarFamily("g", "doc", "gauge", ("k",), keys, values, caches).render(out, False)
    assert b"".join(out[1:]) == b'g{k="a"} +Inf\ng{k="b"} 2\ng{k="c"} 0.5\ng{k="d"} NaN\n'
    out.clear()
    ScalarFamily("g", "doc", "gauge", ("k",), [("b",)], [True], caches).render(out, False)
    assert out[1:] == [b'g{k="b"} 1.0\n']
    cluster = Cluster()
    cluster.feed(sent("a", T0), received("a", T0), started("a", T0))
    cluster.feed(succeeded("a", T0 + 1, runtime=2_345_678.5))
    text = generate(cluster.registry, "")[0].decode()
    assert 'state="SUCCESS"} 2.3456785e+06\n' in text
    assert_as_prometheus_client_renders(cluster)


def test_each_format_is_current_when_the_other_was_scraped_in_between():
    cluster = busy_cluster()
    for uuid, accept in zip("efgh", ["", OPENMETRICS, "", OPENMETRICS], strict=True):
        cluster.task(uuid)
        assert_as_prometheus_client_renders(cluster, accept)


def test_exemplars_only_in_openmetrics_and_only_on_runtime_buckets():
    cluster = Cluster()
    cluster.task("4bf92f35-77b3-4da6-a3ce-929d0e0e4736")
    text = generate(cluster.registry, "")[0].decode()
    assert " # {" not in text
    openmetrics = generate(cluster.registry, OPENMETRICS)[0].decode()
    with_exemplars = [line for line in openmetrics.splitlines() if " # {" in line]
    assert with_exemplars == [
        'celery_task_runtime_seconds_bucket{name="app.add",queue="q1",state="SUCCESS",le="0.1"} 1'
        ' # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736"} 0.07 ' + repr(T0 + 0.07)
    ]
    assert openmetrics.endswith("# EOF\n")


class Fixed:
    """A collector of one family."""

    def __init__(self, family: HistogramMetricFamily) -> None:
        self.family = family

    def collect(self):
        yield self.family

    def describe(self):
        return []


@pytest.mark.parametrize(
    "exemplar",
    [
        ("4bf92f3577b34da6a3ce929d0e0e4736", 0.07, T0),
        (HOSTILE, 2.5, None),
        ("4bf9", 1234567.5, 1700000000),
        ("4bf9", 3, T0),
        ("4bf9", float("inf"), T0),
        ("4bf9", 1e-05, T0),
        ("4bf9", float("nan"), T0),
        ("4bf9", -2e6, T0),
    ],
)
def test_an_exemplar_is_written_as_prometheus_client_writes_it(exemplar):
    trace, value, at = exemplar
    family = HistogramMetricFamily("h", "h", labels=["l"])
    family.add_metric(
        ["v"], [("1.0", 1, Exemplar({"trace_id": trace}, value, at)), ("+Inf", 1)], 1.0
    )
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed(family))
    theirs = generate_openmetrics(registry).decode()
    (line,) = [line for line in theirs.splitlines() if " # {" in line]
    assert line.split(" # {", 1)[1] == exemplar_text(exemplar).decode().split(" # {", 1)[1]
    assert exemplar_text(None) == b""


def test_hostile_label_values_come_back_unchanged():
    cluster = busy_cluster()
    for parse, accept in [(parse_text, ""), (parse_om, OPENMETRICS)]:
        body = generate(cluster.registry, accept)[0].decode()
        labels = [s.labels for f in parse(body) for s in f.samples]
        assert {"name": HOSTILE, "queue": HOSTILE, "exception": HOSTILE} in labels
        assert any(lab.get("worker") == HOSTILE and lab.get("sw_ver") == HOSTILE for lab in labels)


def test_promtool_accepts_the_exposition(tmp_path):
    promtool = require_tool("promtool", "Debian package prometheus")
    body = generate(busy_cluster().registry, "")[0]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (3, "3"),
        (0.25, "0.25"),
        (1.7e9, "1700000000.0"),
        (float("inf"), "+Inf"),
        (float("nan"), "NaN"),
        (True, "1.0"),
    ],
)
def test_numbers_are_written_as_both_formats_read_them(value, text):
    assert number(value) == text


def test_ages_are_written_to_the_millisecond_and_never_negative_or_infinite():
    """No start (NaN), a start after the time, and a start that is not a time are age 0."""
    keys = [(k,) for k in "abcdefg"]
    at = 1_700_000_100.25
    starts = [at - 1 / 3, at - 3600, float("nan"), at + 5, float("-inf"), float("inf"), at]
    slab = Slab(1)
    for start in starts:
        row = slab.add()
        slab.segment(row).d[slab.cell(row)] = start
    caches = (RowsCache(), RowsCache())
    family = AgeFamily("age", "doc", ("k",), keys, slab, caches, at)
    out: list[bytes] = []
    family.render(out, False)
    ages = [line.rsplit(b" ", 1)[1] for line in b"".join(out[1:]).splitlines()]
    assert ages == [b"0.333", b"3600.000", *[b"0.000"] * 5]
    assert [s.value for s in family.samples] == [0.333, 3600.0, *[0.0] * 5]


def test_a_failed_render_lets_go_of_the_engine_lock(monkeypatch):
    """The collector yields its task families holding the engine lock: a render that
    raises must not leave it held (the consumer would stop)."""
    cluster = busy_cluster()

    def broken(self, *args):
        raise RuntimeError("render bug")

    monkeypatch.setattr(ScalarFamily, "_fill", broken)
    with pytest.raises(RuntimeError) as caught:
        generate(cluster.registry, "")
    assert caught.value.__traceback__ is not None, "the traceback is still alive here"
    assert cluster.engine.lock.acquire(timeout=1)
    cluster.engine.lock.release()


def test_the_line_writer_is_built_where_the_engine_is_compiled():
    """CI's second run builds ``_lines`` (``CLEARLY_EXPORTER_COMPILE=1``); its first renders
    with ``%``: each run must be on the path it is meant to test."""
    compiled = os.environ.get("CLEARLY_EXPORTER_COMPILE") == "1"
    assert (exposition._lines is not None) == compiled
