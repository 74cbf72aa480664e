"""State inference and metric state: Python (compiled by mypyc on request), no I/O, driven
by events and a clock."""

from importlib.machinery import EXTENSION_SUFFIXES

from clearly_exporter.engine import core
from clearly_exporter.engine.core import Engine, EngineConfig, Snapshot
from clearly_exporter.engine.records import Attempt, TaskRecord, Transition

#: How the engine was built: "mypyc" when compiled (``CLEARLY_EXPORTER_COMPILE=1``, see
#: setup.py), else "python". On ``clearly_exporter_build_info``, so an operator (and the
#: bench) can tell which runs.
BUILD = "mypyc" if (core.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES)) else "python"

__all__ = ["BUILD", "Attempt", "Engine", "EngineConfig", "Snapshot", "TaskRecord", "Transition"]
