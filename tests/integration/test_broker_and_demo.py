"""The embedded broker command and the demo, as a user runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.broker import api_versions_ok, free_port, port_in_use

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "stream.cli"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}/stat").exists()
        and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]
    )


def test_broker_command_answers_refuses_a_taken_port_and_stops_cleanly() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*CLI, "broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert f"ready on 127.0.0.1:{port}" in first
        assert api_versions_ok("127.0.0.1", port)

        second = subprocess.run(
            [*CLI, "broker", "--port", str(port)],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode != 0
        assert f"port {port} on 127.0.0.1 is already in use" in second.stderr
        assert api_versions_ok("127.0.0.1", port)  # the first one is untouched
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "stopped" in out
    assert not port_in_use("127.0.0.1", port)


def test_demo_shows_interventions_prints_a_summary_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*CLI, "demo", "--duration", "35", "--workdir", str(tmp_path), "--rate", "60"],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "faster than the wall clock" in out
    shown = [ln for ln in out.splitlines() if ln.startswith("intervention ")]
    assert shown, out[-3000:]
    summary = out[out.index("summary") :]
    count = int(re.search(r"interventions: (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert count == len(shown) >= 1
    assert "dead letters:" in summary
    assert time.monotonic() - started < 120

    worker_pid = int(re.search(r"worker pid (\d+)", out).group(1))  # type: ignore[union-attr]
    host, port = re.search(r"embedded broker on ([\d.]+):(\d+)", out).groups()  # type: ignore[union-attr]
    assert not pid_alive(worker_pid)
    assert not port_in_use(host, int(port))
