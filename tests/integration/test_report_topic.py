"""``goldenflow report`` reading the outcomes topic of a real embedded broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from stream.broker import EmbeddedBroker
from stream.cli import main
from stream.config import Settings
from stream.report.outcomes import ReportError, read_topic
from tests.integration.conftest import produce
from tests.unit.test_report import attribution, control, decision

pytestmark = pytest.mark.integration


def messages(records: list[dict[str, Any] | bytes]) -> list[tuple[str, bytes, bytes, int]]:
    """Outcomes messages spread over the first three partitions, keyed by user."""
    out = []
    for i, rec in enumerate(records):
        value = rec if isinstance(rec, bytes) else orjson.dumps(rec)
        key = rec["user_id"].encode() if isinstance(rec, dict) else b"?"
        out.append(("outcomes", key, value, i % 3))
    return out


def test_reads_every_partition_to_its_end_and_stops(settings: Settings) -> None:
    treated = [decision(cost=2.0, unit="USD") for _ in range(30)]
    held = [control() for _ in range(10)]
    records: list[dict[str, Any] | bytes] = [*treated, *held]
    records += [attribution(d, True, 35.0) for d in treated[:12]]
    records += [attribution(d, False) for d in treated[12:25]]  # 5 treated still open
    records += [attribution(d, i < 2, 20.0) for i, d in enumerate(held)]
    records += [treated[0], held[0], b"not json", b'{"kind": "decision"}']
    asyncio.run(produce(settings, messages(records)))

    started = time.monotonic()
    out = read_topic(settings, idle_timeout=20)
    assert time.monotonic() - started < 20
    assert out.source == f"topic {settings.topic('outcomes')}"
    assert out.records == len(records)
    assert (len(out.decisions), len(out.attributions)) == (40, 35)
    assert out.duplicates == 2
    assert out.skipped == {"not_json": 1, "missing_field": 1}

    result = CliRunner().invoke(
        main,
        [
            "report",
            "--json",
            "--broker-url",
            settings.broker_url,
            "--profile",
            settings.profile,
            "--topic-prefix",
            settings.topic_prefix,
        ],
    )
    assert result.exit_code == 0, result.output
    total = orjson.loads(result.output)["groups"][-1]
    assert total["treatment"] == {
        "n": 30,
        "conversions": 12,
        "lost": 13,
        "open": 5,
        "rate": 0.4,
        "gmv": 420.0,
    }
    assert total["control"]["rate"] == 0.2
    assert total["uplift"]["estimate"] == 0.2
    assert total["spend"] == {"USD": 60.0}


def test_an_empty_topic_gives_an_empty_report(settings: Settings) -> None:
    out = read_topic(settings, idle_timeout=10)
    assert out.records == 0
    assert not out.decisions


def test_a_missing_topic_is_refused_clearly(broker: EmbeddedBroker) -> None:
    settings = Settings(broker_url=broker.url, profile="embedded", topic_prefix="no-such-prefix")
    with pytest.raises(ReportError, match=r"topic no-such-prefix\.outcomes does not exist"):
        read_topic(settings, idle_timeout=5)
