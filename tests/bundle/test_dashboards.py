"""The Grafana dashboards' model: what makes them portable, readable and right."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.bundle.helpers import (
    DASHBOARDS,
    GRAFANA_BUILTINS,
    PROMETHEUS_SERIES,
    alert_rules,
    dashboards,
    datasource_queries,
    generator,
    metric_names,
    promql_queries,
    readme_metrics,
    require_tool,
    substitute,
    used_variables,
    variable_query,
    variables,
)

DATASOURCE_OF = {"prometheus": "${datasource}", "tempo": "${tempo}"}
EXPECTED = {"overview.json", "tasks.json", "workers.json", "exporter.json"}


def panels() -> list[tuple[str, dict]]:
    return [(name, panel) for name, board in dashboards().items() for panel in board["panels"]]


def test_the_four_dashboards_are_what_the_generator_writes() -> None:
    rendered = generator().render()
    assert set(rendered) == EXPECTED
    assert {path.name for path in DASHBOARDS.glob("*.json")} == EXPECTED
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_text() == text, (
            f"dashboards/{name} is stale: run `python dashboards/generate.py`"
        )


def test_dashboards_have_unique_uids_and_titles() -> None:
    boards = dashboards().values()
    uids = [board["uid"] for board in boards]
    titles = [board["title"] for board in boards]
    assert len(set(uids)) == len(uids) and all(uids)
    assert len(set(titles)) == len(titles) and all(titles)
    for board in boards:
        assert "5s" in board["timepicker"]["refresh_intervals"]
        assert board.get("id") is None, "a provisioned dashboard must not carry a database id"


def test_no_datasource_uid_is_hard_coded() -> None:
    for name in EXPECTED:
        text = (DASHBOARDS / name).read_text()
        uids = set(re.findall(r'"uid": "([^"]*)"', text)) - {dashboards()[name]["uid"]}
        assert uids <= set(DATASOURCE_OF.values()), f"{name} names datasource uids {uids}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_panel_has_a_title_a_unit_and_a_datasource_variable(name: str) -> None:
    board = dashboards()[name]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(set(ids)) == len(ids)
    for panel in board["panels"]:
        title = panel.get("title")
        assert title, f"{name}: a panel without a title"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{name} {title!r}: no unit"
        source = panel["datasource"]
        assert source["uid"] == DATASOURCE_OF[source["type"]], f"{name} {title!r}: {source}"
        assert panel["targets"], f"{name} {title!r}: no query"
        for target in panel["targets"]:
            assert target["datasource"] == source, f"{name} {title!r}: mixed datasources"
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, f"{name} {title!r}: off grid"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_panels_do_not_overlap(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dashboards()[name]["panels"]:
        g = panel["gridPos"]
        columns, rows = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        cells = {(x, y) for x in columns for y in rows}
        assert not cells & taken, f"{name}: {panel['title']!r} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_variable_is_defined_and_used(name: str) -> None:
    board = dashboards()[name]
    defined = variables(board)
    texts = [
        *(variable_query(v) for v in defined.values()),
        *(panel["title"] for panel in board["panels"]),
        *(panel["datasource"]["uid"] for panel in board["panels"]),
        *(t.get("expr") or t.get("query") for p in board["panels"] for t in p["targets"]),
    ]
    used = set().union(*(used_variables(text) for text in texts))
    assert used - GRAFANA_BUILTINS <= set(defined), f"{name}: undefined {used - set(defined)}"
    assert set(defined) <= used, f"{name}: unused variables {set(defined) - used}"
    kinds = {v["name"]: (v["type"], v.get("query")) for v in defined.values()}
    assert kinds["datasource"] == ("datasource", "prometheus")
    if "tempo" in kinds:
        assert kinds["tempo"] == ("datasource", "tempo")


def test_the_tasks_dashboard_filters_several_task_types_and_finds_a_trace_by_uuid() -> None:
    board = dashboards()["tasks.json"]
    task = variables(board)["task"]
    assert task["multi"] and task["includeAll"] and task["allValue"] == ".*"
    assert variables(board)["task_id"]["type"] == "textbox"
    exprs = [t.get("expr", "") for p in board["panels"] for t in p["targets"]]
    assert sum('name=~"$task"' in e for e in exprs) >= 6
    traceql = [t["query"] for p in board["panels"] for t in p["targets"] if "query" in t]
    assert any('span.celery.task.id = "${task_id}"' in q for q in traceql)
    assert any("status = error" in q and "duration > $slow" in q for q in traceql)
    heatmaps = [p for p in board["panels"] if p["type"] == "heatmap"]
    assert heatmaps and all(t["exemplar"] for p in heatmaps for t in p["targets"])


RANGE_FUNCTION = re.compile(r"\b(rate|irate|increase|deriv)\([^\[]*\[([^\]]+)\]")


def test_rates_use_the_rate_interval() -> None:
    """Rates over ``$__rate_interval``; an increase may also span the whole time range."""
    for query in promql_queries():
        if query.where.startswith(("alert", "datasource")):
            continue
        for func, window in RANGE_FUNCTION.findall(query.text):
            allowed = {"$__rate_interval"} | ({"$__range"} if func == "increase" else set())
            assert window in allowed, f"{query.where}: {func}(...[{window}])"


def test_every_metric_is_one_the_exporter_serves() -> None:
    known = readme_metrics() | PROMETHEUS_SERIES
    for query in promql_queries():
        unknown = metric_names(query.text) - known
        assert not unknown, f"{query.where}: {unknown} are not in the README's metrics table"


def test_every_promql_parses(tmp_path: Path) -> None:
    """promtool checks each query's syntax, as a recording rule with variables filled in."""
    promtool = require_tool("promtool", "Debian package prometheus")
    values = {"__rate_interval": "1m", "__range": "1h", "task": "a|b", "state": "SUCCESS"}
    values |= {"queue": "celery", "worker": "w@h", "instance": "e:9808"}
    rules = []
    for i, query in enumerate(promql_queries()):
        if query.language == "promql":
            expr = substitute(query.text, values).replace("$__tags", 'name="demo.add"')
            rules.append({"record": f"bundle:query_{i}", "expr": expr})
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "bundle", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_dashboard_links_name_real_dashboards_and_variables() -> None:
    boards = {board["uid"]: board for board in dashboards().values()}
    for name, rule in alert_rules().items():
        url = urlsplit(rule["annotations"]["dashboard"])
        uid = url.path.split("/")[2]
        assert url.path.startswith("/d/") and uid in boards, f"{name}: no dashboard {uid}"
        for param in parse_qs(url.query):
            assert param.startswith("var-"), f"{name}: {param}"
            assert param[4:] in variables(boards[uid]), f"{name}: {uid} has no {param[4:]}"


def test_traces_to_metrics_queries_use_the_span_tags() -> None:
    queries = list(datasource_queries())
    assert queries
    for query in queries:
        assert "{$__tags}" in query.text, query.where
