"""A live worker's /metrics against promtool's linter, the dashboard and the alert rules."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from stream.config import Settings
from tests.deploy.tools import (
    ALERTS,
    DASHBOARD,
    Exposition,
    PrometheusTools,
    cart_adds,
    dashboard_exprs,
    promtool,
    referenced_metrics,
    rule_exprs,
    wait_until,
)
from tests.integration.conftest import Worker, produce

pytestmark = pytest.mark.integration

# promtool check metrics exit codes: 0 clean, 1 the page did not parse, 3 lint problems.
LINT_PROBLEMS = 3


def live_metrics(settings: Settings, worker: Worker, events: int = 5) -> str:
    """Start the worker, have it consume a few events, return its /metrics page."""
    worker.start()
    asyncio.run(produce(settings, cart_adds(events, int(time.time() * 1000))))
    wait_until(
        lambda: worker.metric("goldenflow_events_consumed_total") >= events,
        60,
        f"{events} events consumed",
    )
    return worker.get("/metrics").decode()


def test_promtool_finds_no_problem_in_goldenflow_metrics(
    prometheus_tools: PrometheusTools, settings: Settings, worker: Worker
) -> None:
    page = live_metrics(settings, worker)
    result = promtool(prometheus_tools, "check", "metrics", stdin=page)
    report = result.stdout + result.stderr
    # Exit 1 means the exposition itself is broken: always a failure. Exit 3 means
    # lint findings; those on faust's own sensor series are faust's to fix.
    assert result.returncode in (0, LINT_PROBLEMS), report
    ours = [
        line
        for line in report.splitlines()
        if "goldenflow_" in line and "goldenflow_faust_" not in line
    ]
    assert not ours, "promtool lint findings on goldenflow metrics:\n" + "\n".join(ours)
    assert "goldenflow_events_consumed_total" in page


def test_dashboard_and_alerts_only_use_metrics_the_worker_serves(
    settings: Settings, worker: Worker
) -> None:
    exposition = Exposition.parse(live_metrics(settings, worker, events=1))
    sources = {
        DASHBOARD.name: dashboard_exprs(json.loads(DASHBOARD.read_text())),
        ALERTS.name: [expr for _, expr in rule_exprs(ALERTS)],
    }
    missing = {}
    for source, exprs in sources.items():
        names = referenced_metrics(exprs)
        assert names, f"{source}: no goldenflow metric referenced at all"
        unknown = sorted(n for n in names if not exposition.declares(n))
        if unknown:
            missing[source] = unknown
    assert not missing, f"metrics referenced but not on the worker's /metrics: {missing}"
