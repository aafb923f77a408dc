"""promtool on the Prometheus configuration, the alert rules and their unit tests."""

from __future__ import annotations

import yaml

from tests.deploy.tools import (
    ALERTS,
    ALERTS_TEST,
    PROMETHEUS_CONFIG,
    PrometheusTools,
    promtool,
    rule_exprs,
)

EXPECTED_ALERTS = {
    "GoldenflowWorkerDown",
    "GoldenflowConsumerLagGrowing",
    "GoldenflowBrokerUnreachable",
    "GoldenflowDeadLetterRate",
    "GoldenflowInputGapSkipped",
    "GoldenflowRuleReloadFailing",
    "GoldenflowBudgetExhausted",
    "GoldenflowPatternStoppedEmitting",
    "GoldenflowLatencySLOBurn",
}


def test_prometheus_config_is_valid(prometheus_tools: PrometheusTools) -> None:
    result = promtool(prometheus_tools, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert "goldenflow" in [job["job_name"] for job in config["scrape_configs"]]
    assert config["rule_files"] == [ALERTS.name]


def test_alert_rules_are_valid(prometheus_tools: PrometheusTools) -> None:
    result = promtool(prometheus_tools, "check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rule_unit_tests_pass(prometheus_tools: PrometheusTools) -> None:
    result = promtool(prometheus_tools, "test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_documented_and_tested_firing_and_quiet() -> None:
    doc = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in doc["groups"] for rule in group["rules"]]
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"].strip(), rule["alert"]
        assert rule["annotations"]["description"].strip(), rule["alert"]
    assert {name for name, _ in rule_exprs(ALERTS)} == EXPECTED_ALERTS

    cases = yaml.safe_load(ALERTS_TEST.read_text())
    assert cases["rule_files"] == [ALERTS.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    severities: dict[str, set[str]] = {}
    for test in cases["tests"]:
        for check in test.get("alert_rule_test", []):
            name = check["alertname"]
            if check.get("exp_alerts"):
                firing.add(name)
                for alert in check["exp_alerts"]:
                    severities.setdefault(name, set()).add(alert["exp_labels"]["severity"])
            else:
                quiet.add(name)
    assert firing == EXPECTED_ALERTS, f"never tested firing: {EXPECTED_ALERTS - firing}"
    assert quiet == EXPECTED_ALERTS, f"never tested quiet: {EXPECTED_ALERTS - quiet}"
    # Both burn-rate windows (page and ticket) are tested firing.
    assert severities["GoldenflowLatencySLOBurn"] == {"critical", "warning"}
