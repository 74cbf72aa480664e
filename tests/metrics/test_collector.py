"""The collector's exposition: valid with hostile values, every family of the contract."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om

from clearly_exporter import __version__
from clearly_exporter.engine import BUILD, Engine
from clearly_exporter.metrics.collector import EngineCollector
from clearly_exporter.source import BrokerHealth
from tests.engine.events import T0, failed, received, sent, started, succeeded, worker_event
from tests.support import parse_metrics, select

HOSTILE = 'quo"te\nnew\\line ünï€ode'


def render(engine: Engine, now: float = T0 + 10) -> tuple[str, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine, BrokerHealth(), None, clock=lambda: now))
    return generate_latest(registry).decode(), generate_openmetrics(registry).decode()


def test_hostile_label_values_give_a_valid_exposition():
    engine = Engine()
    engine.handle(sent("a", T0, name=HOSTILE, queue=HOSTILE), T0)
    engine.handle(failed("a", T0 + 1, exception=HOSTILE + "(x)"), T0 + 1)
    engine.handle(worker_event("worker-heartbeat", HOSTILE, T0, sw_ver=HOSTILE), T0)
    text, openmetrics = render(engine)
    samples = parse_metrics(text)
    assert select(samples, "celery_tasks_total", name=HOSTILE, queue=HOSTILE, state="FAILURE")
    assert select(samples, "celery_worker_up", worker=HOSTILE)
    assert list(parse_om(openmetrics))


def test_every_family_of_the_contract_is_rendered():
    engine = Engine()
    for i, event in enumerate(
        [sent("a", T0), received("a", T0 + 1), started("a", T0 + 2), succeeded("a", T0 + 3)]
    ):
        engine.handle(event, T0 + i)
    engine.handle(worker_event("worker-heartbeat", "celery@w", T0), T0)
    text, _ = render(engine)
    names = {name for name, _ in parse_metrics(text)}
    for family in [
        "celery_tasks_total",
        "celery_task_runtime_seconds_bucket",
        "celery_task_queue_wait_seconds_count",
        "celery_task_prefetch_wait_seconds_sum",
        "celery_tasks_in_progress",
        "celery_task_oldest_in_progress_age_seconds",
        "celery_worker_up",
        "celery_worker_last_heartbeat_timestamp_seconds",
        "celery_worker_tasks_active",
        "celery_worker_processed_tasks",
        "celery_worker_load_average",
        "celery_worker_heartbeat_interval_seconds",
        "celery_worker_info",
        "clearly_exporter_events_total",
        "clearly_exporter_events_late_total",
        "clearly_exporter_events_invalid_total",
        "clearly_exporter_events_lost_total",
        "clearly_exporter_event_lag_seconds_bucket",
        "clearly_exporter_broker_up",
        "clearly_exporter_broker_reconnects_total",
        "clearly_exporter_tasks_tracked",
        "clearly_exporter_tasks_evicted_total",
        "clearly_exporter_workers_tracked",
        "clearly_exporter_scrape_duration_seconds",
        "clearly_exporter_last_event_timestamp_seconds",
        "clearly_exporter_build_info",
    ]:
        assert family in names, family


def test_build_info_names_the_version_and_the_engines_build():
    samples = parse_metrics(render(Engine())[0])
    assert select(samples, "clearly_exporter_build_info") == {
        (("engine", BUILD), ("version", __version__)): 1.0
    }


def test_oldest_in_progress_age_is_measured_on_the_receive_clock():
    engine = Engine()
    engine.handle(received("a", T0 - 1000), T0)
    samples = parse_metrics(render(engine, now=T0 + 42)[0])
    age = select(samples, "celery_task_oldest_in_progress_age_seconds", state="RECEIVED")
    assert list(age.values()) == [42.0]


def test_worker_series_keep_their_order_whatever_order_the_workers_beat_in():
    """A family whose keys move is sent to the render process and rendered anew."""
    engine = Engine()
    collector = EngineCollector(engine, BrokerHealth(), None, clock=lambda: T0 + 10)

    def worker_keys() -> list:
        families = {m.name: m for m in collector.collect()}  # all: it holds the lock
        return families["celery_worker_up"].keys

    for name in ("celery@b", "celery@a", "celery@c"):
        engine.handle(worker_event("worker-heartbeat", name, T0), T0)
    first = worker_keys()
    engine.handle(worker_event("worker-heartbeat", "celery@a", T0 + 2), T0 + 2)
    assert first == worker_keys() == [("celery@a",), ("celery@b",), ("celery@c",)]
