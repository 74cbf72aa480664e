"""The alert rules: promtool's checks and unit tests, and the Kubernetes copy in sync."""

from __future__ import annotations

import difflib
import subprocess
from collections import defaultdict

import yaml

from tests.bundle.helpers import (
    ALERT_TESTS,
    ALERTS,
    PROMETHEUS_CONFIG,
    PROMETHEUS_RULE,
    alert_rules,
    load_yaml,
    require_tool,
)

EXPECTED_ALERTS = {
    "CeleryWorkerDown",
    "CeleryWorkersAllDown",
    "CeleryTaskFailureRatioHigh",
    "CeleryTaskStuck",
    "CeleryQueueBacklogGrowing",
    "CeleryQueueWaitHigh",
    "CeleryExporterDown",
    "CeleryExporterBrokerDisconnected",
    "CeleryExporterEventLagHigh",
    "CeleryExporterSpansDropped",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = require_tool("promtool", "Debian package prometheus")
    return subprocess.run(
        [tool, *args], capture_output=True, text=True, cwd=ALERTS.parent, timeout=120
    )


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_stack_config_and_its_rule_files() -> None:
    result = promtool("check", "config", PROMETHEUS_CONFIG.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_there_with_its_annotations() -> None:
    rules = alert_rules()
    assert set(rules) == EXPECTED_ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "dashboard"} <= set(rule["annotations"]), name
        assert rule["annotations"]["dashboard"].startswith("http"), name


def test_every_alert_has_a_firing_and_a_silent_unit_test() -> None:
    cases: dict[str, set[bool]] = defaultdict(set)
    for test in load_yaml(ALERT_TESTS)["tests"]:
        for case in test.get("alert_rule_test", []):
            cases[case["alertname"]].add(bool(case["exp_alerts"]))
    for name in EXPECTED_ALERTS:
        assert cases[name] == {True, False}, f"{name}: firing/silent cases {cases[name]}"


def test_the_prometheus_rule_holds_the_same_rules() -> None:
    rule = load_yaml(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    expected, actual = load_yaml(ALERTS), rule["spec"]
    diff = "\n".join(
        difflib.unified_diff(
            yaml.safe_dump(expected, sort_keys=False).splitlines(),
            yaml.safe_dump(actual, sort_keys=False).splitlines(),
            "alerts.yaml",
            "prometheusrule.yaml spec",
            lineterm="",
        )
    )
    assert actual == expected, (
        "deploy/kubernetes/prometheusrule.yaml's spec must be deploy/prometheus/alerts.yaml's "
        f"groups, unchanged:\n{diff}"
    )
