"""A real Prometheus server scrapes a live worker; the dashboard's queries run on it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from stream.config import Settings
from tests.deploy.tools import (
    ALERTS,
    DASHBOARD,
    PrometheusServer,
    as_promql,
    cart_adds,
    dashboard_exprs,
    rule_exprs,
    wait_until,
)
from tests.integration.conftest import Worker, produce

pytestmark = pytest.mark.integration

JOB = "goldenflow"
# Grafana's variables, as Grafana would fill them in for a short time range.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__range": "1h",
    "$job": JOB,
    "$instance": ".*",
}


def scrape_config(worker: Worker) -> dict[str, Any]:
    s = worker.settings
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": JOB,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"{s.web_host}:{s.web_port}"]}],
            }
        ],
    }


def grafana_expr(expr: str) -> str:
    """A dashboard query with Grafana's variables filled in, as plain PromQL."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return as_promql(expr)


def test_prometheus_scrapes_a_worker_and_runs_the_dashboard_and_alert_queries(
    settings: Settings,
    worker: Worker,
    start_prometheus: Callable[[dict[str, Any]], PrometheusServer],
) -> None:
    worker.start()
    prometheus = start_prometheus(scrape_config(worker))

    def worker_up() -> bool:
        return bool(prometheus.query(f'up{{job="{JOB}"}} == 1'))

    wait_until(worker_up, 60, "Prometheus to scrape the worker (up == 1)")

    events = 5
    asyncio.run(produce(settings, cart_adds(events, int(time.time() * 1000))))

    def consumed() -> float:
        result = prometheus.query("sum(goldenflow_events_consumed_total) > 0")
        return float(result[0]["value"][1]) if result else 0.0

    wait_until(lambda: consumed() >= events, 60, f"Prometheus to see {events} events consumed")
    [sample] = prometheus.query(f'sum by (type) (goldenflow_events_consumed_total{{job="{JOB}"}})')
    assert sample["metric"] == {"type": "cart_add"}

    # Every dashboard and alert expression is valid PromQL on a real server (a syntax
    # or type error is an HTTP 400 and fails query()).
    dashboard = json.loads(DASHBOARD.read_text())
    for expr in dashboard_exprs(dashboard):
        prometheus.query(grafana_expr(expr))
    for name, expr in rule_exprs(ALERTS):
        assert prometheus.query(expr) == [], f"{name} fires on a healthy worker"

    funnel = next(p for p in dashboard["panels"] if p["title"] == "Funnel step rates")

    def funnel_has_data() -> bool:
        return bool(prometheus.query(grafana_expr(funnel["targets"][0]["expr"])))

    wait_until(funnel_has_data, 30, "the funnel panel's query to return the cart_add rate")
    assert worker.running
