"""Fixtures for the deployment tests.

The broker, settings and worker fixtures are the integration tests' own (re-exported
here, so these tests start real worker processes the same way). Prometheus and
promtool come from Debian's ``prometheus`` package, installed once per session when
missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import (
    PrometheusServer,
    PrometheusTools,
    find_prometheus_tools,
    install_prometheus,
)
from tests.integration.conftest import broker, settings, worker

__all__ = ["broker", "prometheus_tools", "settings", "start_prometheus", "worker"]


@pytest.fixture(scope="session")
def prometheus_tools() -> PrometheusTools:
    """``prometheus`` and ``promtool``; installs Debian's package once when they are missing."""
    tools = find_prometheus_tools()
    if tools is not None:
        return tools
    installed, output = install_prometheus()
    tools = find_prometheus_tools()
    if tools is None:
        what = "installed but did not provide" if installed else "could not be installed"
        pytest.fail(
            f"Prometheus {what} prometheus/promtool "
            f"(apt-get update && apt-get install -y prometheus):\n{output[-2000:]}"
        )
    return tools


@pytest.fixture
def start_prometheus(
    prometheus_tools: PrometheusTools, tmp_path: Path
) -> Iterator[Callable[[dict[str, Any]], PrometheusServer]]:
    """Start a Prometheus server with a given configuration; it is stopped afterwards."""
    servers: list[PrometheusServer] = []

    def start(config: dict[str, Any]) -> PrometheusServer:
        workdir = tmp_path / f"prometheus-{len(servers)}"
        workdir.mkdir()
        server = PrometheusServer(prometheus_tools, workdir, config)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
