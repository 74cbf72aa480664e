"""Which build of the engine runs, as ``clearly_exporter_build_info`` reports it."""

from __future__ import annotations

import os

from clearly_exporter.engine import BUILD, core


def test_the_build_is_the_one_installed():
    """``scripts/compiled-engine-tests.sh`` runs the engine's tests on the compiled build
    with ``CLEARLY_EXPORTER_COMPILE=1``: there, a plain module imported instead fails."""
    compiled = os.environ.get("CLEARLY_EXPORTER_COMPILE") == "1"
    assert ("mypyc" if compiled else "python") == BUILD, core.__file__
    assert core.__file__.endswith(".py") != compiled
