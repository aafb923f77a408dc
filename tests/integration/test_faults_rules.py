"""Fault injection: broken rule files land in a running worker's rules folder.

While traffic flows, the rules folder of a live worker receives, one at a time: a
file of random bytes, a rule file cut off mid-line (a half-written copy), a second
file reusing rule ids of another (a conflict), a schema-invalid file, an
unparsable condition, a "billion laughs" file (aliases of aliases) and a file nested
thousands of levels deep. Each is refused: the worker keeps running, the rules in force
keep deciding (commands carry the old ``rule.ruleset_version``), the refusal is
counted in ``goldenflow_rule_reload_failures_total`` and the log names the file and
line. A valid edit afterwards is picked up.

Probes are cross-sell checkouts: an immediate pattern, decided on arrival, so each
probe's command shows which rules decided it without waiting for event time.
"""

from __future__ import annotations

import asyncio
import random
import re
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from stream.config import Settings
from stream.domain.timeutil import format_ts
from tests.helpers import RULES, wait_until
from tests.integration.conftest import Worker, as_json, consume, produce

pytestmark = pytest.mark.integration


#: A few hundred bytes of YAML whose aliases of aliases stand for 9^9 values.
LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [" + ", ".join([f"*{a}"] * 9) + "]\n"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


def benign_traffic(settings: Settings, stop: threading.Event) -> Callable[[], int]:
    """Events on all four topics at the wall clock, until ``stop``: they keep every
    partition busy and decide nothing. Returns a function giving the count sent."""
    sent = [0]
    rng = random.Random(5)

    def run() -> None:
        n = 0
        while not stop.is_set():
            batch = []
            for _ in range(40):
                n += 1
                user = f"busy-{rng.randrange(500)}"
                base = {"event_id": f"busy-{n}", "user_id": user, "ts": format_ts(now_ms())}
                kind, body = rng.choice(
                    [
                        ("cart", {"type": "cart_view"}),
                        ("cart", {"type": "detail_view", "sku": "s", "price": 3.0}),
                        ("checkout", {"type": "checkout_submit", "checkout_id": f"c{n}"}),
                        ("cashier", {"type": "payment_success", "order_id": f"o{n}"}),
                        ("order", {"type": "order_paid", "order_id": f"o{n}"}),
                    ]
                )
                batch.append((kind, user.encode(), orjson.dumps({**base, **body}), None))
            asyncio.run(produce(settings, batch))
            sent[0] += len(batch)
            stop.wait(0.2)

    threading.Thread(target=run, daemon=True, name="benign-traffic").start()
    return lambda: sent[0]


def now_ms() -> int:
    return int(time.time() * 1000)


class Probe:
    """Cross-sell checkouts (diapers without wipes) and the command each one gets."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.n = 0

    def __call__(self) -> dict[str, Any]:
        self.n += 1
        user = f"probe-{self.n}"
        body = {
            "event_id": f"probe-{self.n}",
            "type": "checkout_start",
            "user_id": user,
            "ts": format_ts(now_ms()),
            "checkout_id": f"pc-{self.n}",
            "items": [{"sku": "diapers", "category": "mother_baby.diapers", "price": 30.0}],
            "amount": 30.0,
        }
        asyncio.run(produce(self.settings, [("checkout", user.encode(), orjson.dumps(body), None)]))
        found: list[dict[str, Any]] = []

        def arrived() -> bool:
            records = as_json(
                asyncio.run(
                    consume(self.settings, "interventions", expect=self.n, timeout=3, settle=0)
                )
            )
            found[:] = [r for r in records if r["user_id"] == user]
            return bool(found)

        wait_until(arrived, 60, f"the command for {user}")
        assert len(found) == 1, found
        return found[0]


def test_broken_rule_files_are_refused_during_traffic_and_a_valid_one_applies(
    settings: Settings, tmp_path: Path
) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    guard = rules / "guardrails.yaml"
    data = yaml.safe_load(guard.read_text())
    data["holdout"]["share"] = 0.0  # every probe gets its command
    guard.write_text(yaml.safe_dump(data))
    s = settings.model_copy(update={"rules_dir": rules})
    worker = Worker(s, tmp_path / "worker.log").start()
    stop = threading.Event()
    try:
        wait_until(lambda: ready(worker), 60, "the worker to be ready")
        old = orjson.loads(worker.get("/health"))["ruleset_version"]
        sent = benign_traffic(s, stop)
        probe = Probe(s)
        first = probe()
        assert first["rule"] == {"id": "cross_sell.add_on", "ruleset_version": old}

        cross = rules / "cross_sell.rules.yaml"
        original = cross.read_text()
        cut = original.index("then:") + 20  # inside the flow mapping of the action
        faults: list[tuple[str, Callable[[], None], str]] = [
            (
                "corrupted",
                lambda: (rules / "zz.rules.yaml").write_bytes(random.Random(1).randbytes(2_000)),
                r"zz\.rules\.yaml:1: cannot read the file",
            ),
            (
                "half-written",
                lambda: cross.write_text(original[:cut]),
                r"cross_sell\.rules\.yaml:\d+: YAML syntax error",
            ),
            (
                "conflicting",
                lambda: (rules / "cross_sell_copy.rules.yaml").write_text(
                    original.replace("ruleset: cross_sell", "ruleset: cross_sell_copy")
                ),
                r"cross_sell_copy\.rules\.yaml:5: duplicate rule id 'cross_sell\.add_on' "
                r"\(first at [^)]*cross_sell\.rules\.yaml:5\)",
            ),
            (
                "schema-invalid",
                lambda: cross.write_text(original.replace("priority: 10", "priority: high")),
                r"cross_sell\.rules\.yaml:8: ",
            ),
            (
                "bad condition",
                lambda: cross.write_text(original.replace("amount >= 10", "amount >= 10 +")),
                r"cross_sell\.rules\.yaml:9: ",
            ),
            (
                "aliases expanding without end",
                lambda: (rules / "zz.rules.yaml").write_text(LAUGHS),
                r"zz\.rules\.yaml:\d+: the file expands to more than 100,000 YAML values",
            ),
            (
                "nested thousands deep",
                lambda: (rules / "zz.rules.yaml").write_text("a: " + "[" * 5000 + "]" * 5000),
                r"zz\.rules\.yaml:1: the YAML is nested too deeply",
            ),
        ]
        failures = 0.0
        during: list[dict[str, Any]] = []
        for name, write, where in faults:
            write()
            failures += 1
            wait_until(
                lambda f=failures: worker.metric("goldenflow_rule_reload_failures_total") >= f,
                30,
                f"the {name} file to be refused",
            )
            command = probe()
            during.append(command)
            assert command["rule"] == first["rule"], name  # the old rules still decide
            assert command["intervention"] == first["intervention"], name
            log = worker.log.read_text()
            assert re.search(where, log), f"{name}: no {where!r} in the log"
            assert worker.running, name
            # put the folder back as it was: valid again, the same version, nothing to do
            for extra in ("zz.rules.yaml", "cross_sell_copy.rules.yaml"):
                (rules / extra).unlink(missing_ok=True)
            cross.write_text(original)
            time.sleep(2.5)
            assert worker.metric("goldenflow_rule_reload_failures_total") == failures
            assert orjson.loads(worker.get("/health"))["ruleset_version"] == old

        # a valid edit is picked up
        cross.write_text(original.replace("max_items: 3", "max_items: 4"))
        wait_until(
            lambda: orjson.loads(worker.get("/health"))["ruleset_version"] != old,
            30,
            "the valid edit to be swapped in",
        )
        new = orjson.loads(worker.get("/health"))["ruleset_version"]
        after = probe()
        assert after["rule"] == {"id": "cross_sell.add_on", "ruleset_version": new}
        assert after["intervention"]["params"]["max_items"] == 4
        assert worker.metric("goldenflow_rule_reload_failures_total") == len(faults)
        assert "refused" in worker.log.read_text()
        stop.set()
        time.sleep(0.5)
        commands = as_json(asyncio.run(consume(s, "interventions", expect=probe.n, timeout=10)))
        assert len(commands) == probe.n  # the traffic decides nothing; each probe once
        versions = {c["rule"]["ruleset_version"] for c in commands}
        assert versions == {old, new}

        def events() -> float:
            return worker.metric("goldenflow_events_consumed_total")

        # all the traffic was handled, through every fault
        wait_until(lambda: events() >= sent() + probe.n, 30, "the traffic to be consumed")
        print(
            "\nFAULTS rules:",
            f"faults={len(faults)} refused={int(failures)} probes={probe.n}",
            f"traffic_sent={sent()} events_consumed={int(events())} old={old} new={new}",
        )
    finally:
        stop.set()
        worker.stop()


def ready(worker: Worker) -> bool:
    try:
        return bool(orjson.loads(worker.get("/ready"))["ready"])
    except OSError:
        return False
