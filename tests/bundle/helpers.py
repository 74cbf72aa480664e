"""What the bundle tests share: paths, required tools, and the queries found in the bundle."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest
import redis
import yaml

from tests.support import reachable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARDS = ROOT / "dashboards"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts.test.yaml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
PROMETHEUS_RULE = DEPLOY / "kubernetes" / "prometheusrule.yaml"
COMPOSE = DEPLOY / "compose.yaml"
DATASOURCES = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
TEMPO_CONFIG = DEPLOY / "tempo" / "tempo.yaml"
TEMPO_QUERIES = DEPLOY / "tempo" / "queries.md"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

#: Series Prometheus makes itself for every target, not served by the exporter.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds"}
#: The Grafana variables every query may use without the dashboard defining them.
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__all"}

METRIC = re.compile(r"\b((?:celery|clearly_exporter)_[a-z0-9_]+|scrape_duration_seconds|up(?=\{))")
SELECTOR = re.compile(
    r"\b((?:celery|clearly_exporter)_[a-z0-9_]+\b(?:\{[^}]*\})?|"
    r"(?:up|scrape_duration_seconds)\{[^}]*\})"
)
VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]")
LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$", re.S)
TRACEQL_ATTRIBUTE = re.compile(r"\bspan\.([a-z_.]+[a-z_])")


#: Redis databases of the bundle tests alone (others flush theirs): broker, result backend.
REDIS_BROKER = "redis://127.0.0.1:6379/11"
REDIS_BACKEND = "redis://127.0.0.1:6379/12"


def unavailable(message: str) -> NoReturn:
    """Skip, or fail when ``CI=true``: every real part is mandatory there."""
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (mandatory when CI=true)")
    pytest.skip(message)


def require_redis() -> str:
    """The bundle tests' Redis broker URL, its databases flushed."""
    if not reachable("127.0.0.1", 6379):
        unavailable("redis not reachable on 127.0.0.1:6379")
    for url in (REDIS_BROKER, REDIS_BACKEND):
        redis.Redis.from_url(url).flushdb()
    return REDIS_BROKER


def require_tool(name: str, source: str) -> str:
    """The tool's path; else skip, or fail when ``CI=true`` (tools are mandatory there)."""
    path = shutil.which(name)
    if path:
        return path
    unavailable(f"{name} not found ({source}): run scripts/install-test-tools.sh")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def generator() -> ModuleType:
    """dashboards/generate.py as a module (dashboards/ is no package)."""
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict]:
    """Every dashboard JSON model, by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def variables(board: dict) -> dict[str, dict]:
    return {v["name"]: v for v in board["templating"]["list"]}


def variable_query(variable: dict) -> str:
    query = variable.get("query", "")
    return query["query"] if isinstance(query, dict) else query


@dataclass(frozen=True)
class Query:
    """One query of the bundle and where it comes from, for messages."""

    where: str
    text: str
    language: str  # promql, label_values or traceql


def dashboard_queries() -> Iterator[Query]:
    """Every panel target and variable query of every dashboard."""
    for name, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                yield Query(f"{name} variable {var['name']}", variable_query(var), "label_values")
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                where = f"{name} panel {panel['title']!r} {target['refId']}"
                if "expr" in target:
                    yield Query(where, target["expr"], "promql")
                else:
                    yield Query(where, target["query"], "traceql")


def alert_rules() -> dict[str, dict]:
    """Every alerting rule of alerts.yaml, by alert name."""
    return {
        rule["alert"]: rule
        for group in load_yaml(ALERTS)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def datasource_queries() -> Iterator[Query]:
    """The Tempo datasource's traces-to-metrics queries (``$__tags`` is the span's task)."""
    for source in load_yaml(DATASOURCES)["datasources"]:
        links = source.get("jsonData", {}).get("tracesToMetrics", {})
        for query in links.get("queries", []):
            yield Query(f"datasource {source['name']} {query['name']!r}", query["query"], "promql")


def promql_queries() -> Iterator[Query]:
    """Every PromQL of the bundle: dashboards, alerts, datasource links."""
    yield from (q for q in dashboard_queries() if q.language != "traceql")
    for name, rule in alert_rules().items():
        yield Query(f"alert {name}", rule["expr"], "promql")
    yield from datasource_queries()


def substitute(text: str, values: dict[str, str]) -> str:
    """Grafana's variable interpolation with fixed values; unknown variables stay."""

    def value(match: re.Match) -> str:
        name = next(g for g in match.groups() if g)
        return values.get(name, match.group(0))

    return VARIABLE.sub(value, text)


def as_promql(query: Query, values: dict[str, str]) -> str:
    """The query as Prometheus would run it: variables replaced, label_values as a count."""
    text = substitute(query.text, values)
    if query.language == "label_values":
        match = LABEL_VALUES.match(text)
        assert match, f"{query.where}: unsupported variable query {text!r}"
        return f"count by ({match.group(2)}) ({match.group(1)})"
    return text


def used_variables(text: str) -> set[str]:
    return {next(g for g in m.groups() if g) for m in VARIABLE.finditer(text)}


def metric_names(text: str) -> set[str]:
    return set(METRIC.findall(text))


def selectors(promql: str) -> set[str]:
    """The vector selectors of a PromQL expression (metric name and label matchers)."""
    return set(SELECTOR.findall(promql))


def readme_metrics() -> set[str]:
    """Sample names the README's metrics table promises (histograms with their series)."""
    table = re.findall(r"^\| `([a-z_]+)` \| ([a-z ()]+) \|", (ROOT / "README.md").read_text(), re.M)
    names = set()
    for name, kind in table:
        names.add(name)
        if kind.strip() == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """The Dockerfile's instructions, one list per stage (continuation lines joined)."""
    stages: list[list[Instruction]] = []
    logical = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(keyword.upper(), args.strip()))
    return stages
