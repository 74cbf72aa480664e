"""Every mode of bench/run.py, end to end at a tiny size, against the local Redis.

Not a measurement: it checks that each mode runs, accounts for everything it sent,
and writes its figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clearly_exporter.engine import BUILD
from tests.bench.loader import BENCH
from tests.support import reachable

#: A database no other test uses: the runner publishes storms on its event exchange.
BROKER = "redis://127.0.0.1:6379/8"


def test_every_mode_runs_and_accounts_for_what_it_sent(tmp_path: Path):
    if not reachable("127.0.0.1", 6379):
        if os.environ.get("CI") == "true":
            pytest.fail("redis not reachable on 127.0.0.1:6379 (mandatory when CI=true)")
        pytest.skip("redis not reachable on 127.0.0.1:6379")
    out = tmp_path / "figures.json"
    argv = [sys.executable, str(BENCH / "run.py"), "--mode", "all", "--broker", BROKER]
    argv += ["--tasks", "400", "--names", "5", "--workers", "3", "--rounds", "1"]
    argv += ["--scrapes", "1", "--scrape-count", "2", "--load-rate", "4000", "--ingest-rounds", "2"]
    argv += ["--freshness-seconds", "2", "--idle-markers", "2", "--tracing", "--json", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["engine"] == BUILD, "the build the exporters import, as the tests do"

    drain = figures["drain"]
    traced = drain["rounds"][0]["results"]["clearly-exporter, tracing"]
    assert all(r["complete"] for r in drain["rounds"][0]["results"].values())
    assert traced["spans"]["received"] == traced["spans"]["expected"] == 400
    assert set(drain["ratios"]) == {"clearly-exporter", "clearly-exporter, tracing"}

    memory = figures["memory"]
    assert (memory["tasks_tracked"], memory["tasks_evicted"]) == (400, 0)
    assert memory["bytes_per_task"] > 0

    scrape = figures["scrape"]
    assert (scrape["names"], scrape["queues"]) == (5, 4)
    states = {"PENDING", "RECEIVED", "STARTED", "SUCCESS", "FAILURE", "RETRY", "REVOKED"}
    assert set(scrape["states"]) == states | {"REJECTED"}
    assert scrape["steady_scrape_ms"]["n"] == 2 and scrape["ingest_ratio"] > 0
    assert len(scrape["ingest_plain"]) == len(scrape["ingest_scraped"]) == 2

    freshness = figures["freshness"]
    assert freshness["markers_in_metrics"] == freshness["markers_sent"] > 2
    assert freshness["loaded_ms"]["n"] > 0
    spans = freshness["spans"]
    assert spans["received"] == spans["exported"] == spans["ended"] > 0
