"""Writes the Grafana dashboards of this folder: ``python dashboards/generate.py``.

The dashboards are code so that every panel follows the same rules without copy-paste:
datasources only through the ``${datasource}`` / ``${tempo}`` variables, a unit on every
panel, ``$__rate_interval`` in every rate, refresh choices from 5s. Edit this file, run it,
and commit both; ``tests/bundle`` fails when a JSON file is not what this script writes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

JSON = dict[str, Any]

PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
TEMPO = {"type": "tempo", "uid": "${tempo}"}
REFRESH_INTERVALS = ["5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h"]
TAG = "clearly-exporter"
GRID_WIDTH = 24
ALL = {"selected": True, "text": ["All"], "value": ["$__all"]}

# Label filters shared by a dashboard's queries.
QUEUE = 'queue=~"$queue"'
TASKS = 'queue=~"$queue", name=~"$task"'
TASK_STATES = 'queue=~"$queue", name=~"$task", state=~"$state"'
WORKER = 'worker=~"$worker"'
INSTANCE = 'instance=~"$instance"'


# --- queries ------------------------------------------------------------------------


def prom(expr: str, legend: str = "", *, exemplar: bool = False, table: bool = False) -> JSON:
    """A PromQL target; ``table`` makes it an instant query shaped as a table."""
    return {
        "datasource": PROMETHEUS,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "exemplar": exemplar,
        "range": not table,
        "instant": table,
        "format": "table" if table else "time_series",
    }


def quantiles(metric: str, selector: str, by: str = "", exemplar: bool = False) -> list[JSON]:
    """p50, p95 and p99 of a histogram; exemplars on p99 only, so traces show once."""
    grouping = f"{by}, le" if by else "le"
    prefix = "{{" + by + "}} " if by else ""
    return [
        prom(
            f"histogram_quantile({q}, sum by ({grouping}) "
            f"(rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            f"{prefix}p{int(q * 100)}",
            exemplar=exemplar and q == 0.99,
        )
        for q in (0.5, 0.95, 0.99)
    ]


def traceql(query: str, table_type: str, limit: int) -> JSON:
    """A TraceQL search listing spans or traces; a row links to its trace."""
    return {
        "datasource": TEMPO,
        "queryType": "traceql",
        "query": query,
        "limit": limit,
        "spss": 10,
        "tableType": table_type,
        "filters": [],
    }


def rate_ratio(failed: str, finished: str, by: str = "") -> str:
    """Failures over finished attempts (SUCCESS + FAILURE); retries are not failures."""
    grouping = f" by ({by})" if by else ""
    return (
        f"sum{grouping} (rate(celery_tasks_total{{{failed}}}[$__rate_interval]))\n/\n"
        f"sum{grouping} (rate(celery_tasks_total{{{finished}}}[$__rate_interval]))"
    )


# --- panels -------------------------------------------------------------------------


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[JSON],
    size: tuple[int, int],
    *,
    datasource: JSON = PROMETHEUS,
    options: JSON | None = None,
    defaults: JSON | None = None,
) -> JSON:
    """The fields every panel has; ``size`` is (width, height) in grid units."""
    refs = "ABCDEFGHIJ"
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource,
        "gridPos": {"w": size[0], "h": size[1]},
        "fieldConfig": {"defaults": {"unit": unit, **(defaults or {})}, "overrides": []},
        "options": options or {},
        "targets": [{"refId": refs[i], **t} for i, t in enumerate(targets)],
    }


def timeseries(
    title: str,
    description: str,
    unit: str,
    targets: list[JSON],
    *,
    width: int = 12,
    stack: bool = False,
    max_value: float | None = None,
) -> JSON:
    defaults: JSON = {
        "min": 0,
        "custom": {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 15 if stack else 5,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        },
    }
    if max_value is not None:
        defaults["max"] = max_value
    options = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel(
        "timeseries", title, description, unit, targets, (width, 8),
        options=options, defaults=defaults,
    )  # fmt: skip


def stat(
    title: str,
    description: str,
    unit: str,
    target: JSON,
    *,
    steps: list[tuple[float | None, str]] | None = None,
    mappings: list[JSON] | None = None,
    width: int = 4,
) -> JSON:
    """A single number; ``steps`` are (from value, color) thresholds, the first from None."""
    steps = steps or [(None, "blue")]
    defaults = {
        "color": {"mode": "thresholds"},
        "thresholds": {
            "mode": "absolute",
            "steps": [{"value": value, "color": color} for value, color in steps],
        },
        "mappings": mappings or [],
    }
    options = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background" if len(steps) > 1 else "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "textMode": "value",
    }
    return panel(
        "stat", title, description, unit, [target], (width, 4),
        options=options, defaults=defaults,
    )  # fmt: skip


def heatmap(title: str, description: str, target: JSON, *, width: int = 12) -> JSON:
    """Prometheus histogram buckets as a heatmap over time, with exemplars as dots."""
    options = {
        "calculate": False,
        "cellGap": 1,
        "color": {"mode": "scheme", "scheme": "Oranges", "exponent": 0.5, "steps": 64},
        "exemplars": {"color": "rgba(255,0,255,0.7)"},
        "filterValues": {"le": 1e-9},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
        "tooltip": {"mode": "single", "yHistogram": False, "showColorScale": False},
        "yAxis": {"axisPlacement": "left", "unit": "s"},
    }
    return panel("heatmap", title, description, "s", [target], (width, 8), options=options)


def table(title: str, description: str, unit: str, target: JSON, *, width: int = 24) -> JSON:
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel("table", title, description, unit, [target], (width, 8), options=options)


def tempo_table(title: str, description: str, target: JSON) -> JSON:
    """Spans or traces found by TraceQL; durations come in milliseconds."""
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
    return panel(
        "table", title, description, "ms", [target], (24, 9),
        datasource=TEMPO, options=options,
    )  # fmt: skip


UP_DOWN = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 1},
            "1": {"text": "up", "color": "green", "index": 0},
        },
    }
]


def state_timeline(title: str, description: str, target: JSON) -> JSON:
    defaults = {
        "color": {"mode": "thresholds"},
        "thresholds": {"mode": "absolute", "steps": [{"value": None, "color": "red"}]},
        "mappings": UP_DOWN,
    }
    options = {
        "showValue": "never",
        "mergeValues": True,
        "rowHeight": 0.8,
        "alignValue": "left",
        "legend": {"showLegend": False},
        "tooltip": {"mode": "single"},
    }
    return panel(
        "state-timeline", title, description, "none", [target], (24, 8),
        options=options, defaults=defaults,
    )  # fmt: skip


# --- variables ----------------------------------------------------------------------


def datasource_variable(name: str, label: str, kind: str) -> JSON:
    return {
        "name": name,
        "label": label,
        "type": "datasource",
        "query": kind,
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(name: str, label: str, query: str) -> JSON:
    """A multi-select of label values; "All" matches everything, as the regex ``.*``."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": PROMETHEUS,
        "definition": query,
        "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "current": ALL,
        "hide": 0,
        "includeAll": True,
        "allValue": ".*",
        "multi": True,
        "options": [],
        "refresh": 2,
        "regex": "",
        "sort": 1,
    }


def textbox(name: str, label: str, description: str) -> JSON:
    return {
        "name": name,
        "label": label,
        "description": description,
        "type": "textbox",
        "query": "",
        "current": {"text": "", "value": ""},
        "hide": 0,
        "options": [],
    }


def custom(name: str, label: str, values: list[str], default: str) -> JSON:
    return {
        "name": name,
        "label": label,
        "type": "custom",
        "query": ",".join(values),
        "current": {"selected": True, "text": default, "value": default},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [{"selected": v == default, "text": v, "value": v} for v in values],
    }


# --- dashboards ---------------------------------------------------------------------


def place(panels: list[JSON]) -> list[JSON]:
    """Ids and positions: left to right, wrapping into rows of the grid's width."""
    x = y = row_height = 0
    for number, p in enumerate(panels, start=1):
        grid = p["gridPos"]
        if x + grid["w"] > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        grid.update(x=x, y=y)
        p["id"] = number
        x += grid["w"]
        row_height = max(row_height, grid["h"])
    return panels


def dashboard(
    uid: str, title: str, description: str, variables: list[JSON], panels: list[JSON]
) -> JSON:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["celery", TAG],
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "timepicker": {"refresh_intervals": REFRESH_INTERVALS},
        "timezone": "browser",
        "links": [
            {
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": False,
                "includeVars": False,
                "keepTime": True,
                "title": "Celery dashboards",
            }
        ],
        "annotations": {"list": []},
        "templating": {"list": variables},
        "panels": place(panels),
    }


def overview() -> JSON:
    finished = f'{QUEUE}, state=~"SUCCESS|FAILURE"'
    failed = f'{QUEUE}, state="FAILURE"'
    runtime_p95 = (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(celery_task_runtime_seconds_bucket{{{QUEUE}}}[$__rate_interval])))"
    )
    panels = [
        stat(
            "Tasks finished",
            "Attempts ending in SUCCESS or FAILURE per second.",
            "ops",
            prom(f"sum(rate(celery_tasks_total{{{finished}}}[$__rate_interval]))"),
        ),
        stat(
            "Failure ratio",
            "FAILURE among finished attempts (retries are not failures).",
            "percentunit",
            prom(rate_ratio(failed, finished)),
            steps=[(None, "green"), (0.05, "orange"), (0.1, "red")],
        ),
        stat("Runtime p95", "95% of attempts ran within this.", "s", prom(runtime_p95)),
        stat(
            "Tasks in progress",
            "Tasks now PENDING, RECEIVED, STARTED or waiting for a retry.",
            "short",
            prom(f"sum(celery_tasks_in_progress{{{QUEUE}}})"),
        ),
        stat(
            "Workers up",
            "Workers heartbeating now.",
            "short",
            prom("sum(celery_worker_up)"),
            steps=[(None, "red"), (1, "green")],
        ),
        stat(
            "Workers down",
            "Workers silent past the exporter's worker timeout, kept until purged.",
            "short",
            prom("count(celery_worker_up == 0) or vector(0)"),
            steps=[(None, "green"), (1, "red")],
        ),
        timeseries(
            "Throughput by state",
            "Tasks reaching each state per second: PENDING is sent, RECEIVED taken by a "
            "worker, STARTED running, then an outcome.",
            "ops",
            [
                prom(
                    f"sum by (state) (rate(celery_tasks_total{{{QUEUE}}}[$__rate_interval]))",
                    "{{state}}",
                )
            ],
        ),
        timeseries(
            "Failure ratio by task",
            "FAILURE among finished attempts of each task type.",
            "percentunit",
            [prom(rate_ratio(failed, finished, by="name"), "{{name}}")],
            max_value=1,
        ),
        timeseries(
            "Runtime p50 / p95 / p99",
            "Started to end of attempt, every outcome. Exemplar dots on p99 open the trace.",
            "s",
            quantiles("celery_task_runtime_seconds", QUEUE, exemplar=True),
        ),
        timeseries(
            "Tasks in progress by state",
            "RETRY counts tasks waiting for their next attempt.",
            "short",
            [prom(f"sum by (state) (celery_tasks_in_progress{{{QUEUE}}})", "{{state}}")],
            stack=True,
        ),
        timeseries(
            "Queue depth",
            "Messages waiting in each queue, asked of the broker at scrape time.",
            "short",
            [prom(f"sum by (queue) (celery_queue_length{{{QUEUE}}})", "{{queue}}")],
        ),
        timeseries(
            "Queue wait p50 / p95",
            "Sent to received by a worker (needs task_send_sent_event); ETA tasks excluded.",
            "s",
            quantiles("celery_task_queue_wait_seconds", QUEUE, by="queue")[:2],
        ),
        timeseries(
            "Oldest task in progress",
            "Age of the oldest task in each state: a STARTED age that keeps growing is a "
            "stuck task.",
            "s",
            [
                prom(
                    f"max by (state) (celery_task_oldest_in_progress_age_seconds{{{QUEUE}}})",
                    "{{state}}",
                )
            ],
        ),
        timeseries(
            "Workers up / down",
            "A dead worker reads down until the exporter purges it (24h by default).",
            "short",
            [
                prom("sum(celery_worker_up)", "up"),
                prom("count(celery_worker_up == 0) or vector(0)", "down"),
            ],
        ),
    ]
    variables = [
        datasource_variable("datasource", "Prometheus", "prometheus"),
        query_variable("queue", "Queue", "label_values(celery_tasks_total, queue)"),
    ]
    return dashboard(
        "clearly-overview",
        "Celery / Overview",
        "Throughput, failures, runtimes, queues and workers of the Celery cluster.",
        variables,
        panels,
    )


def tasks() -> JSON:
    span_filter = 'span.celery.task.name =~ "${task:pipe}" && span.celery.queue =~ "${queue:pipe}"'
    panels = [
        timeseries(
            "Rate by task and state",
            "Tasks of the selected types reaching the selected states per second.",
            "ops",
            [
                prom(
                    "sum by (name, state) "
                    f"(rate(celery_tasks_total{{{TASK_STATES}}}[$__rate_interval]))",
                    "{{name}} {{state}}",
                )
            ],
        ),
        timeseries(
            "Failures by exception",
            "Failed attempts per second, by task type and exception class.",
            "ops",
            [
                prom(
                    "sum by (name, exception) "
                    f"(rate(celery_task_failures_total{{{TASKS}}}[$__rate_interval]))",
                    "{{name}}: {{exception}}",
                )
            ],
        ),
        heatmap(
            "Runtime",
            "Runtimes of the selected tasks and outcomes. Exemplar dots link to the trace "
            "in Tempo.",
            prom(
                "sum by (le) "
                f"(rate(celery_task_runtime_seconds_bucket{{{TASK_STATES}}}[$__rate_interval]))",
                "{{le}}",
                exemplar=True,
            )
            | {"format": "heatmap"},
        ),
        timeseries(
            "Runtime p50 / p95 / p99 by task",
            "Started to end of attempt, per task type and selected outcome.",
            "s",
            quantiles("celery_task_runtime_seconds", TASK_STATES, by="name"),
        ),
        tempo_table(
            "Recent failed and slow spans",
            "Spans of the selected tasks that failed or ran longer than the 'Slow' "
            "threshold. Click a trace id to open the whole workflow.",
            traceql(f"{{ {span_filter} && (status = error || duration > $slow) }}", "spans", 50),
        ),
        tempo_table(
            "Trace of task ${task_id}",
            "Paste a task uuid into 'Task id' and click the trace id to open its workflow.",
            traceql('{ span.celery.task.id = "${task_id}" }', "traces", 5),
        ),
        tempo_table(
            "Retried attempts",
            "Attempts of the selected tasks after a retry (retries > 0), newest first.",
            traceql(f"{{ {span_filter} && span.celery.task.retries > 0 }}", "spans", 50),
        ),
        timeseries(
            "Queue wait p95 by task",
            "Sent to received by a worker; needs task_send_sent_event.",
            "s",
            quantiles("celery_task_queue_wait_seconds", TASKS, by="name")[1:2],
        ),
        timeseries(
            "Prefetch wait p95 by task",
            "Received by a worker to started: time spent in the worker's prefetch buffer.",
            "s",
            quantiles("celery_task_prefetch_wait_seconds", TASKS, by="name")[1:2],
        ),
        timeseries(
            "In progress by task",
            "Tasks of the selected types now in each in-progress state.",
            "short",
            [
                prom(
                    f"sum by (name, state) (celery_tasks_in_progress{{{TASK_STATES}}})",
                    "{{name}} {{state}}",
                )
            ],
            stack=True,
        ),
        timeseries(
            "Oldest in progress by task",
            "Age of the oldest task of each type in each state.",
            "s",
            [
                prom(
                    "max by (name, state) "
                    f"(celery_task_oldest_in_progress_age_seconds{{{TASK_STATES}}})",
                    "{{name}} {{state}}",
                )
            ],
        ),
        table(
            "Totals over the time range",
            "Tasks of each type that reached each state in the dashboard's time range.",
            "short",
            prom(
                f"sum by (name, state) (increase(celery_tasks_total{{{TASK_STATES}}}[$__range]))",
                table=True,
            ),
        ),
    ]
    variables = [
        datasource_variable("datasource", "Prometheus", "prometheus"),
        datasource_variable("tempo", "Tempo", "tempo"),
        query_variable("queue", "Queue", "label_values(celery_tasks_total, queue)"),
        query_variable("task", "Task", 'label_values(celery_tasks_total{queue=~"$queue"}, name)'),
        query_variable("state", "State", 'label_values(celery_tasks_total{name=~"$task"}, state)'),
        custom("slow", "Slow", ["1s", "5s", "10s", "30s", "1m", "5m"], "5s"),
        textbox("task_id", "Task id", "A task uuid: its trace shows below."),
    ]
    return dashboard(
        "clearly-tasks",
        "Celery / Tasks",
        "Per task type: rates, failures by exception, runtimes with exemplars, and the "
        "matching traces in Tempo.",
        variables,
        panels,
    )


def workers() -> JSON:
    panels = [
        stat(
            "Workers up",
            "Selected workers heartbeating now.",
            "short",
            prom(f"sum(celery_worker_up{{{WORKER}}})"),
            steps=[(None, "red"), (1, "green")],
            width=6,
        ),
        stat(
            "Workers down",
            "Selected workers read down (kept until the exporter purges them).",
            "short",
            prom(f"count(celery_worker_up{{{WORKER}}} == 0) or vector(0)"),
            steps=[(None, "green"), (1, "red")],
            width=6,
        ),
        stat(
            "Active tasks",
            "Tasks the selected workers are running, from their heartbeats.",
            "short",
            prom(f"sum(celery_worker_tasks_active{{{WORKER}}})"),
            width=6,
        ),
        stat(
            "Processed",
            "Tasks the selected workers processed per second.",
            "ops",
            prom(f"sum(rate(celery_worker_processed_tasks{{{WORKER}}}[$__rate_interval]))"),
            width=6,
        ),
        state_timeline(
            "Up / down",
            "Each worker's liveness over time, from the exporter's receive clock.",
            prom(f"celery_worker_up{{{WORKER}}}", "{{worker}}"),
        ),
        timeseries(
            "Heartbeat age",
            "Seconds since the exporter last heard from each worker.",
            "s",
            [
                prom(
                    f"time() - celery_worker_last_heartbeat_timestamp_seconds{{{WORKER}}}",
                    "{{worker}}",
                )
            ],
        ),
        timeseries(
            "Active tasks",
            "Tasks each worker is running.",
            "short",
            [prom(f"celery_worker_tasks_active{{{WORKER}}}", "{{worker}}")],
        ),
        timeseries(
            "Load average (1m)",
            "The worker hosts' one-minute load average.",
            "short",
            [prom(f'celery_worker_load_average{{{WORKER}, period="1m"}}', "{{worker}}")],
        ),
        timeseries(
            "Processed rate",
            "Tasks each worker processed per second.",
            "ops",
            [
                prom(
                    f"rate(celery_worker_processed_tasks{{{WORKER}}}[$__rate_interval])",
                    "{{worker}}",
                )
            ],
        ),
        table(
            "Worker info",
            "Software and process of each worker.",
            "none",
            prom(f"celery_worker_info{{{WORKER}}}", table=True),
        ),
    ]
    variables = [
        datasource_variable("datasource", "Prometheus", "prometheus"),
        query_variable("worker", "Worker", "label_values(celery_worker_up, worker)"),
    ]
    return dashboard(
        "clearly-workers",
        "Celery / Workers",
        "Liveness, heartbeats, load and throughput of each Celery worker.",
        variables,
        panels,
    )


def exporter() -> JSON:
    connected = [
        {
            "type": "value",
            "options": {
                "0": {"text": "disconnected", "color": "red", "index": 1},
                "1": {"text": "connected", "color": "green", "index": 0},
            },
        }
    ]
    panels = [
        stat(
            "Broker",
            "Whether every selected exporter's event consumer is connected.",
            "none",
            prom(f"min(clearly_exporter_broker_up{{{INSTANCE}}})"),
            steps=[(None, "red"), (1, "green")],
            mappings=connected,
        ),
        stat(
            "Events",
            "Celery events received per second.",
            "ops",
            prom(f"sum(rate(clearly_exporter_events_total{{{INSTANCE}}}[$__rate_interval]))"),
        ),
        stat(
            "Event lag p95",
            "Receive time minus event time, including clock skew between hosts.",
            "s",
            prom(
                "histogram_quantile(0.95, sum by (le) "
                f"(rate(clearly_exporter_event_lag_seconds_bucket{{{INSTANCE}}}"
                "[$__rate_interval])))"
            ),
        ),
        stat(
            "Last event",
            "Seconds since the last event was received.",
            "s",
            prom(f"time() - max(clearly_exporter_last_event_timestamp_seconds{{{INSTANCE}}})"),
        ),
        stat(
            "Tasks tracked",
            "Tasks held in memory (bounded by --max-tasks).",
            "short",
            prom(f"sum(clearly_exporter_tasks_tracked{{{INSTANCE}}})"),
        ),
        stat(
            "Spans exported",
            "Spans the OTLP endpoint accepted per second.",
            "ops",
            prom(
                f"sum(rate(clearly_exporter_spans_exported_total{{{INSTANCE}}}[$__rate_interval]))"
            ),
        ),
        timeseries(
            "Events by type",
            "Celery events received per second, by event type.",
            "ops",
            [
                prom(
                    "sum by (type) "
                    f"(rate(clearly_exporter_events_total{{{INSTANCE}}}[$__rate_interval]))",
                    "{{type}}",
                )
            ],
            stack=True,
        ),
        timeseries(
            "Event lag p50 / p95 / p99",
            "Receive time minus event time.",
            "s",
            quantiles("clearly_exporter_event_lag_seconds", INSTANCE),
        ),
        timeseries(
            "Late, inferred and invalid events",
            "Late: for a state already passed (merged, never moving a task back). Inferred: "
            "states generated for missing events. Invalid: undecodable, skipped.",
            "ops",
            [
                prom(
                    "sum(rate(clearly_exporter_events_late_total"
                    f"{{{INSTANCE}}}[$__rate_interval]))",
                    "late",
                ),
                prom(
                    "sum by (state) (rate(clearly_exporter_transitions_inferred_total"
                    f"{{{INSTANCE}}}[$__rate_interval]))",
                    "inferred {{state}}",
                ),
                prom(
                    "sum(rate(clearly_exporter_events_invalid_total"
                    f"{{{INSTANCE}}}[$__rate_interval]))",
                    "invalid",
                ),
            ],
        ),
        timeseries(
            "Broker connection",
            "1 while connected; reconnections and failed queue-depth queries per interval.",
            "short",
            [
                prom(f"clearly_exporter_broker_up{{{INSTANCE}}}", "connected {{instance}}"),
                prom(
                    "increase(clearly_exporter_broker_reconnects_total"
                    f"{{{INSTANCE}}}[$__rate_interval])",
                    "reconnects {{instance}}",
                ),
                prom(
                    "increase(clearly_exporter_broker_scrape_errors_total"
                    f"{{{INSTANCE}}}[$__rate_interval])",
                    "queue depth errors {{instance}}",
                ),
            ],
        ),
        timeseries(
            "Tracked tasks and workers",
            "Tasks and workers held in memory.",
            "short",
            [
                prom(f"clearly_exporter_tasks_tracked{{{INSTANCE}}}", "tasks {{instance}}"),
                prom(f"clearly_exporter_workers_tracked{{{INSTANCE}}}", "workers {{instance}}"),
            ],
        ),
        timeseries(
            "Task evictions",
            "Tasks dropped per second to stay within --max-tasks; in-flight ones lose "
            "their later states.",
            "ops",
            [
                prom(
                    "sum(rate(clearly_exporter_tasks_evicted_total"
                    f"{{{INSTANCE}}}[$__rate_interval]))",
                    "evicted",
                )
            ],
        ),
        timeseries(
            "Spans exported and dropped",
            "Spans per second the OTLP endpoint accepted, and those lost, by reason.",
            "ops",
            [
                prom(
                    "sum(rate(clearly_exporter_spans_exported_total"
                    f"{{{INSTANCE}}}[$__rate_interval]))",
                    "exported",
                ),
                prom(
                    "sum by (reason) (rate(clearly_exporter_spans_dropped_total"
                    f"{{{INSTANCE}}}[$__rate_interval]))",
                    "dropped {{reason}}",
                ),
            ],
        ),
        timeseries(
            "Result fetches",
            "Values Celery cut at 1024 characters, completed from the result backend, by outcome.",
            "ops",
            [
                prom(
                    "sum by (outcome) (rate(clearly_exporter_result_fetches_total"
                    f"{{{INSTANCE}}}[$__rate_interval]))",
                    "{{outcome}}",
                )
            ],
        ),
        timeseries(
            "Scrape duration",
            "How long the exporter took to collect, and the whole scrape seen by Prometheus.",
            "s",
            [
                prom(
                    f"clearly_exporter_scrape_duration_seconds{{{INSTANCE}}}",
                    "collect {{instance}}",
                ),
                prom(f"scrape_duration_seconds{{{INSTANCE}}}", "scrape {{instance}}"),
            ],
            width=24,
        ),
    ]
    variables = [
        datasource_variable("datasource", "Prometheus", "prometheus"),
        query_variable(
            "instance", "Exporter", "label_values(clearly_exporter_build_info, instance)"
        ),
    ]
    return dashboard(
        "clearly-exporter",
        "Celery / clearly-exporter",
        "Health of clearly-exporter itself: events, lag, broker, memory, spans, scrapes.",
        variables,
        panels,
    )


DASHBOARDS = {
    "overview.json": overview,
    "tasks.json": tasks,
    "workers.json": workers,
    "exporter.json": exporter,
}


def render() -> dict[str, str]:
    """Every dashboard file's name and exact content."""
    return {
        name: json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main() -> int:
    for name, text in render().items():
        (HERE / name).write_text(text)
        print(f"wrote {HERE / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
