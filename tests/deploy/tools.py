"""Prometheus tooling for the deployment tests: install, promtool, a throwaway server."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from stream.broker import free_port
from tests.helpers import REPO, EventMaker, wait_until

DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "goldenflow.json"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"

METRIC_NAME = re.compile(r"\bgoldenflow_[a-z0-9_]+")
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


# -- installing Prometheus ----------------------------------------------------------------


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: str
    promtool: str


def find_prometheus_tools() -> PrometheusTools | None:
    prometheus, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if prometheus and promtool:
        return PrometheusTools(prometheus, promtool)
    return None


def install_prometheus() -> tuple[bool, str]:
    """``apt-get update`` then ``apt-get install -y prometheus``; (succeeded, output)."""
    return install_debian_package("prometheus", 600)


def install_debian_package(package: str, timeout_s: int) -> tuple[bool, str]:
    """``apt-get update`` then ``apt-get install -y PACKAGE``; (succeeded, output)."""
    apt = shutil.which("apt-get")
    if apt is None:
        return False, "apt-get is not available on this machine"
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            return False, "installing packages needs root (or sudo)"
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    output: list[str] = []
    for args, timeout in (
        (["update"], 300),
        (["install", "-y", "--no-install-recommends", package], timeout_s),
    ):
        try:
            done = subprocess.run(
                [*prefix, apt, *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return False, "\n".join([*output, f"apt-get {args[0]} timed out after {timeout}s"])
        output.append(done.stdout + done.stderr)
        if done.returncode != 0:
            return False, "\n".join(output)
    return True, "\n".join(output)


# -- promtool ------------------------------------------------------------------------------


def promtool(
    tools: PrometheusTools, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tools.promtool, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- a Prometheus server -------------------------------------------------------------------


class PrometheusServer:
    """A real Prometheus process on 127.0.0.1 with its storage in a temporary folder."""

    def __init__(self, tools: PrometheusTools, workdir: Path, config: dict[str, Any]) -> None:
        self.tools = tools
        self.workdir = workdir
        self.port = free_port()
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    self.tools.prometheus,
                    f"--config.file={self.config_file}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    "--storage.tsdb.retention.time=1h",
                    "--log.level=info",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, timeout, f"Prometheus ready on {self.url}")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"prometheus exited: {self.log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=5) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"Prometheus refused {params}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query: the result vector (empty when the expression selects nothing)."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        return self.proc.returncode


# -- metric names --------------------------------------------------------------------------


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression in a Grafana dashboard (panel targets and variables)."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                # Panel targets' "expr"; template variables' "query" (label_values).
                is_query = key == "query" and "goldenflow_" in str(value)
                if isinstance(value, str) and (key == "expr" or is_query):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(dashboard)
    return found


LABEL_VALUES = re.compile(r"^\s*label_values\((?P<selector>.*),\s*(?P<label>\w+)\s*\)\s*$", re.S)


def as_promql(expr: str) -> str:
    """A Grafana query as PromQL: ``label_values(sel, label)`` becomes a grouping of ``sel``."""
    match = LABEL_VALUES.match(expr)
    if match is None:
        return expr
    return f"group by ({match['label']}) ({match['selector']})"


def rule_exprs(rules_file: Path) -> Iterator[tuple[str, str]]:
    """(rule name, expression) of every alerting and recording rule in a rules file."""
    doc = yaml.safe_load(rules_file.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule["record"], rule["expr"]


def referenced_metrics(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)}


@dataclass(frozen=True)
class Exposition:
    """What a /metrics page declares: metric name -> type (from # HELP and # TYPE lines)."""

    types: dict[str, str]

    @classmethod
    def parse(cls, text: str) -> Exposition:
        types: dict[str, str] = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "#" and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if parts[1] == "TYPE" and len(parts) >= 4:
                    types[name] = parts[3]
                else:
                    types.setdefault(name, "untyped")
        return cls(types)

    def declares(self, name: str) -> bool:
        """True if ``name`` is declared, or is a histogram's/summary's sample series."""
        if name in self.types:
            return True
        for suffix in HISTOGRAM_SUFFIXES:
            base = name.removesuffix(suffix)
            if base != name and self.types.get(base) in ("histogram", "summary"):
                return suffix != "_bucket" or self.types[base] == "histogram"
        return False


# -- the rules ConfigMap -------------------------------------------------------------------

RULES_CONFIGMAP = K8S / "rules-configmap.yaml"
RULES_CONFIGMAP_HEADER = """\
# The rule files of rules/ as a ConfigMap, mounted at /etc/goldenflow/rules.
# Generated from rules/*.yaml; after changing the rules, regenerate it with
#   GOLDENFLOW_UPDATE_MANIFESTS=1 .venv/bin/pytest tests/deploy/test_manifests.py -k rules
# (or: kubectl create configmap goldenflow-rules --from-file=rules/ --dry-run=client -o yaml)
"""


class _LiteralDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)


def rule_files(rules_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(rules_dir.glob("*.yaml"))}


def render_rules_configmap(rules_dir: Path) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "goldenflow-rules",
            "labels": {"app.kubernetes.io/name": "goldenflow"},
        },
        "data": rule_files(rules_dir),
    }
    body = yaml.dump(doc, Dumper=_LiteralDumper, sort_keys=False, width=1000)
    return RULES_CONFIGMAP_HEADER + body


# -- traffic -------------------------------------------------------------------------------


def cart_adds(n: int, now_ms: int) -> list[tuple[str, bytes | None, bytes, int | None]]:
    """``n`` valid cart_add events of ``n`` shoppers, stamped ``now_ms``, for ``produce``."""
    ev = EventMaker()
    messages: list[tuple[str, bytes | None, bytes, int | None]] = []
    for i in range(n):
        user = f"deploy-shopper-{i}"
        add = ev.add(user, now_ms + i, sku=f"sku-{i}", category="books", price=12.5)
        messages.append(("cart", user.encode(), orjson.dumps(add), None))
    return messages
