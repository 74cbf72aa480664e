"""State inference and metric state: pure Python, no I/O, driven by events and a clock."""

from clearly_exporter.engine.core import Engine, EngineConfig, Snapshot
from clearly_exporter.engine.records import Attempt, TaskRecord, Transition

__all__ = ["Attempt", "Engine", "EngineConfig", "Snapshot", "TaskRecord", "Transition"]
