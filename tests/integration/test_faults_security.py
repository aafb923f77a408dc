"""Security faults: hostile rule files, exposed pages, leaked secrets, loose pins.

* Rule files cannot run code or read files: YAML tags that construct Python objects
  (or include files) and conditions with calls, attribute access, indexing or dunder
  names are refused with ``file:line`` (no broker needed).
* The web endpoint binds only to the configured ``web_host``.
* ``/metrics``, ``/health`` and ``/ready`` show no user id after real traffic.
* ``--help`` and the worker's log never show a SASL password set in the environment.
* Every dependency declared in pyproject.toml has an exact pin in constraints.txt.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import orjson
import pytest

from stream.broker import EmbeddedBroker, free_port
from stream.decide.rulebook import load_rulebook
from stream.domain.timeutil import DAY, HOUR
from stream.errors import RuleFileError
from tests.helpers import REPO, RULES, wait_until
from tests.integration.conftest import Worker, as_json, consume, isolated_settings, produce
from tests.integration.test_recovery import ticks, traffic

SECRET = "Sup3r-S3cret-" + "9f1c2e7a"  # a made-up password to look for

# -- rule files --------------------------------------------------------------------------

RULE = """\
ruleset: evil
pattern: cross_sell
rules:
  - id: evil.one
    owner: nobody
    priority: 5
    when: {when}
    then:
      type: cross_sell
      channel: in_app
      params:
        max_items: {value}
"""

TAGS = {
    "apply": "!!python/object/apply:os.system ['touch {marker}']",
    "new": "!!python/object/new:os.system ['touch {marker}']",
    "name": "!!python/name:os.system",
    "module": "!!python/module:os",
    "object": "!!python/object:builtins.object {{}}",
    "subprocess": "!!python/object/apply:subprocess.check_output [['cat', '/etc/passwd']]",
    "include": "!include /etc/passwd",
}
CONDITIONS = {
    "call": "__import__('os').system('touch {marker}') == 0",
    "attribute": "amount.__class__ == 'x'",
    "open": "open('/etc/passwd') == 'x'",
    "eval": "eval('1') == 1",
    "indexing": "amount[0] > 1",
    "dunder": "__builtins__ == 1",
    "lambda": "(lambda: 1) == 1",
    "walrus": "(x := 1) == 1",
    "statement": "amount > 1; import os",
}


def evil_rules(tmp_path: Path, text: str) -> Path:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    (rules / "evil.rules.yaml").write_text(text)
    return rules


@pytest.mark.parametrize("tag", sorted(TAGS))
def test_yaml_tags_cannot_construct_objects_or_read_files(tag: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    value = TAGS[tag].format(marker=marker)
    rules = evil_rules(tmp_path, RULE.format(when="amount >= 10", value=value))
    with pytest.raises(RuleFileError) as refused:
        load_rulebook(rules)
    [problem] = refused.value.problems
    assert (Path(problem.path).name, problem.line) == ("evil.rules.yaml", 12), problem
    assert not marker.exists()
    assert "root:" not in str(refused.value)  # nothing of /etc/passwd was read


@pytest.mark.parametrize("tag", ["apply", "include"])
def test_a_tag_in_a_condition_or_at_the_top_is_refused_too(tag: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    value = TAGS[tag].format(marker=marker)
    for text, line in [
        (RULE.format(when=value, value=3), 7),
        (f"--- {value}\n", 1),
    ]:
        shutil.rmtree(tmp_path / "rules", ignore_errors=True)
        with pytest.raises(RuleFileError) as refused:
            load_rulebook(evil_rules(tmp_path, text))
        assert f"evil.rules.yaml:{line}:" in str(refused.value)
        assert not marker.exists()


@pytest.mark.parametrize("name", sorted(CONDITIONS))
def test_conditions_cannot_call_reach_attributes_or_dunders(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    when = '"' + CONDITIONS[name].format(marker=marker) + '"'
    rules = evil_rules(tmp_path, RULE.format(when=when, value=3))
    with pytest.raises(RuleFileError) as refused:
        load_rulebook(rules)
    assert [(Path(p.path).name, p.line) for p in refused.value.problems] == [
        ("evil.rules.yaml", 7)
    ], refused.value.problems
    assert not marker.exists()


# -- a live worker: binding and pages -------------------------------------------------------


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table, width in (("tcp", 8), ("tcp6", 32)):
        lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            assert len(hex_addr) == width
            if width == 8:
                address = socket.inet_ntop(socket.AF_INET, bytes.fromhex(hex_addr)[::-1])
            else:
                raw = bytes.fromhex(hex_addr)
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                address = socket.inet_ntop(socket.AF_INET6, words)
            found.append((address, int(hex_port, 16)))
    return found


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.integration
def test_web_pages_bind_to_web_host_and_show_no_user_ids(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker, data_dir=tmp_path / "w0", web_host="127.0.0.1")
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        assert worker.proc is not None
        port = settings.web_port
        sockets = listening(worker.proc.pid)
        assert ("127.0.0.1", port) in sockets, sockets
        assert all(address == "127.0.0.1" for address, _ in sockets), sockets
        assert reachable("127.0.0.1", port)
        assert not reachable("127.0.0.2", port)  # another loopback address: not bound

        # real traffic, with commands, dead letters and decisions, then the pages
        now = int(time.time() * 1000)
        messages, users, _ = traffic(400, now - 3 * DAY, seed=77)
        bad = [("cart", u.encode(), b'{"user_id": "' + u.encode() + b'"', None) for u in users]
        asyncio.run(produce(settings, messages + bad[:50] + ticks(now - HOUR)))
        commands = as_json(asyncio.run(consume(settings, "interventions", expect=50, timeout=90)))
        assert len(commands) >= 50
        wait_until(
            lambda: worker.metric("goldenflow_events_consumed_total") >= len(messages),
            60,
            "the traffic to be consumed",
        )
        leaked = set()
        for page in ("/metrics", "/health", "/ready"):
            text = worker.get(page).decode()
            leaked |= {(page, user) for user in users if user in text}
        assert leaked == set()
        assert {c["user_id"] for c in commands} <= set(users)  # the ids looked for are real
    finally:
        worker.stop()


@pytest.mark.integration
def test_a_configured_web_host_is_the_only_address_served(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    settings = isolated_settings(broker, data_dir=tmp_path / "w0", web_host="127.0.0.2")
    worker = Worker(settings, tmp_path / "worker.log").start()
    try:
        assert worker.proc is not None
        assert [a for a, p in listening(worker.proc.pid) if p == settings.web_port] == ["127.0.0.2"]
        assert orjson.loads(worker.get("/health"))["status"] == "ok"
        assert not reachable("127.0.0.1", settings.web_port)
    finally:
        worker.stop()


# -- secrets ------------------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=timeout,
        check=False,
    )


def test_help_never_shows_the_sasl_password() -> None:
    env = {"GOLDENFLOW_SASL_PASSWORD": SECRET, "GOLDENFLOW_SASL_USERNAME": "gf"}
    for command in (["--help"], ["worker", "--help"], ["demo", "--help"], ["broker", "--help"]):
        done = cli(*command, env=env)
        assert done.returncode == 0, done.stderr
        assert "GOLDENFLOW_SASL_PASSWORD" in done.stdout or command != ["worker", "--help"]
        assert SECRET not in done.stdout + done.stderr, command


def test_a_refused_sasl_setting_does_not_echo_the_password() -> None:
    env = {"GOLDENFLOW_SECURITY_PROTOCOL": "SASL_SSL", "GOLDENFLOW_SASL_PASSWORD": SECRET}
    done = cli("worker", env=env)  # no user name: refused at start
    assert done.returncode != 0
    assert "sasl_username" in (done.stdout + done.stderr).lower()
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.integration
def test_a_sasl_worker_never_logs_its_password(broker: EmbeddedBroker, tmp_path: Path) -> None:
    """The embedded broker does not do SASL: the worker fails to connect, with debug
    logging on. Neither the failure nor anything before it shows the password."""
    settings = isolated_settings(broker, data_dir=tmp_path / "w0")
    env = {
        **os.environ,
        "GOLDENFLOW_BROKER_URL": settings.broker_url,
        "GOLDENFLOW_PROFILE": "embedded",
        "GOLDENFLOW_APP_ID": settings.app_id,
        "GOLDENFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "GOLDENFLOW_RULES_DIR": str(RULES),
        "GOLDENFLOW_WEB_PORT": str(free_port()),
        "GOLDENFLOW_DATA_DIR": str(tmp_path / "w0"),
        "GOLDENFLOW_LOG_LEVEL": "debug",
        "GOLDENFLOW_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "GOLDENFLOW_SASL_MECHANISM": "SCRAM-SHA-512",
        "GOLDENFLOW_SASL_USERNAME": "goldenflow",
        "GOLDENFLOW_SASL_PASSWORD": SECRET,
    }
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stream.cli", "worker"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:  # still trying to connect: fine, stop it
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    text = log.read_text(errors="replace")
    assert "sasl" in text.lower(), text[-2000:]  # it did try, and says how it failed
    assert SECRET not in text
    assert SECRET[:8] not in text


# -- pins -----------------------------------------------------------------------------------------


def test_every_declared_dependency_has_an_exact_pin() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    # what `make install` installs: the runtime dependencies and the dev extra
    declared = [*project["dependencies"], *project["optional-dependencies"]["dev"]]

    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    pins = {}
    for text in (REPO / "constraints.txt").read_text().splitlines():
        line = text.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), line
            pins[norm(name)] = version
    missing = []
    for requirement in declared:
        name = norm(re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0])
        if name not in pins:
            missing.append(requirement)
        pinned = re.search(r"==\s*([^\s,;]+)", requirement)
        if pinned and name in pins:
            assert pins[name] == pinned.group(1), (requirement, pins[name])
    assert missing == [], f"declared but not pinned in constraints.txt: {missing}"
