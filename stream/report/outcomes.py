"""Read the outcomes records: decisions and attributions, checked and deduplicated.

Workers write one record per decision and one per attribution to
``<topic_prefix>.outcomes`` (JSON values, key = user id). Delivery is at least
once, so the same record can arrive more than once: the first copy of each
(kind, id) is kept and later copies are counted as duplicates.

A record that cannot be used (not JSON, not an object, a missing or mistyped
field, contradictory fields) is skipped and counted under a short code; the
report shows the counts and the first few problems so nothing is dropped silently.
Reading never stops on a bad record.

Records come from a JSON-lines file (``.gz`` allowed) or from the Kafka topic,
read from the beginning of every partition up to the end offsets taken at start.
"""

from __future__ import annotations

import asyncio
import gzip
import math
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from stream.app.embedded import fetch_highwaters
from stream.config import Settings
from stream.errors import GoldenflowError

DECISION_RESULTS = frozenset({"emitted", "deferred", "suppressed", "no_rule"})
ATTRIBUTION_RESULTS = frozenset({"converted", "lost"})
ARMS = frozenset({"treatment", "control"})
#: Problems kept word for word (the rest are only counted).
MAX_EXAMPLES = 5


class ReportError(GoldenflowError):
    """The outcomes could not be read at all (missing file, unreachable or missing topic)."""


class BadRecord(Exception):
    """One record that cannot be used: ``code`` is counted, ``reason`` is shown."""

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True, slots=True)
class Decision:
    id: str
    pattern: str
    rule: str | None
    arm: str | None  # "treatment", "control" or None (in neither arm)
    result: str  # "emitted", "deferred", "suppressed" or "no_rule"
    reason: str | None
    cost: float
    unit: str | None
    at_ms: int | None


@dataclass(frozen=True, slots=True)
class Attribution:
    id: str  # the intervention id of its decision
    arm: str
    result: str  # "converted" or "lost"
    gmv: float
    at_ms: int | None
    credited_to: str | None


@dataclass
class Outcomes:
    """Every usable record of one source, first copy of each (kind, id) kept."""

    source: str
    decisions: dict[str, Decision] = field(default_factory=dict)
    attributions: dict[str, Attribution] = field(default_factory=dict)
    records: int = 0  # lines or messages looked at (blank lines not counted)
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, raw: bytes | None, where: str) -> None:
        """Parse one line or message value; skip and count it if it cannot be used."""
        self.records += 1
        try:
            record = parse_record(raw)
        except BadRecord as exc:
            self.skipped[exc.code] += 1
            if len(self.examples) < MAX_EXAMPLES:
                self.examples.append(f"{where}: {exc.reason}")
            return
        store: dict[str, Any] = (
            self.decisions if isinstance(record, Decision) else self.attributions
        )
        if record.id in store:
            self.duplicates += 1
        else:
            store[record.id] = record

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def parse_record(raw: bytes | None) -> Decision | Attribution:
    """One decision or attribution from a JSON value; BadRecord says why not."""
    if raw is None or not raw.strip():
        raise BadRecord("empty", "empty record")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRecord("not_json", f"not JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise BadRecord("not_object", f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("kind")
    if kind == "decision":
        return _decision(obj)
    if kind == "attribution":
        return _attribution(obj)
    raise BadRecord(
        "unknown_kind", f"field 'kind' must be 'decision' or 'attribution', got {kind!r:.40}"
    )


def _decision(obj: dict[str, Any]) -> Decision:
    arm = _optional_choice(obj, "arm", ARMS)
    result = _choice(obj, "result", DECISION_RESULTS)
    if arm == "treatment" and result not in ("emitted", "deferred"):
        raise BadRecord(
            "inconsistent", f"a treatment decision must be emitted or deferred, got {result!r}"
        )
    if arm == "control" and result != "suppressed":
        raise BadRecord("inconsistent", f"a control decision must be suppressed, got {result!r}")
    return Decision(
        id=_text(obj, "id"),
        pattern=_text(obj, "pattern"),
        rule=_text_or_none(obj, "rule"),
        arm=arm,
        result=result,
        reason=_text_or_none(obj, "reason"),
        cost=_amount(obj, "cost"),
        unit=_text_or_none(obj, "unit"),
        at_ms=_ms_or_none(obj, "at_ms"),
    )


def _attribution(obj: dict[str, Any]) -> Attribution:
    return Attribution(
        id=_text(obj, "id"),
        arm=_choice(obj, "arm", ARMS),
        result=_choice(obj, "result", ATTRIBUTION_RESULTS),
        gmv=_amount(obj, "gmv"),
        at_ms=_ms_or_none(obj, "at_ms"),
        credited_to=_text_or_none(obj, "credited_to"),
    )


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise BadRecord("missing_field", f"field {name!r} is missing")
    if not isinstance(value, str) or not value:
        raise BadRecord("wrong_type", f"field {name!r} must be non-empty text, got {value!r:.40}")
    return value


def _text_or_none(obj: dict[str, Any], name: str) -> str | None:
    return None if obj.get(name) is None else _text(obj, name)


def _choice(obj: dict[str, Any], name: str, allowed: frozenset[str]) -> str:
    value = obj.get(name)
    if value not in allowed:
        expected = ", ".join(sorted(allowed))
        if value is None:
            raise BadRecord("missing_field", f"field {name!r} is missing (one of {expected})")
        raise BadRecord("bad_value", f"field {name!r} must be one of {expected}; got {value!r:.40}")
    return str(value)


def _optional_choice(obj: dict[str, Any], name: str, allowed: frozenset[str]) -> str | None:
    return None if obj.get(name) is None else _choice(obj, name, allowed)


def _amount(obj: dict[str, Any], name: str) -> float:
    """A money or points amount: a finite number >= 0 (missing or null means 0)."""
    value = obj.get(name)
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRecord("wrong_type", f"field {name!r} must be a number, got {value!r:.40}")
    if not math.isfinite(value) or value < 0:
        raise BadRecord("bad_value", f"field {name!r} must be a number >= 0, got {value!r}")
    return float(value)


def _ms_or_none(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRecord(
            "wrong_type",
            f"field {name!r} must be epoch milliseconds (an integer), got {value!r:.40}",
        )
    return value


# -- sources ---------------------------------------------------------------------------


def read_file(path: Path) -> Outcomes:
    """Records from a JSON-lines file, one record per line; ``.gz`` files are decompressed."""
    out = Outcomes(source=str(path))
    if not path.is_file():
        what = "a folder" if path.is_dir() else "missing"
        raise ReportError(
            f"outcomes file {path} is {what}; give a JSON-lines file of outcomes records "
            "(.jsonl or .jsonl.gz), or leave SOURCE out to read the Kafka topic"
        )
    lineno = 0
    try:
        for lineno, line in enumerate(_lines(path), start=1):
            if line.strip():
                out.add(line, f"line {lineno}")
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        if lineno == 0:
            raise ReportError(
                f"outcomes file {path} is not a readable gzip file ({exc}); "
                "name plain JSON-lines files without the .gz suffix"
            ) from None
        out.skipped["truncated"] += 1
        if len(out.examples) < MAX_EXAMPLES:
            out.examples.append(f"after line {lineno}: the compressed file ends early ({exc})")
    except OSError as exc:
        raise ReportError(f"cannot read outcomes file {path}: {exc}") from None
    return out


def _lines(path: Path) -> Iterator[bytes]:
    if path.name.endswith(".gz"):
        with gzip.open(path, "rb") as zipped:
            yield from zipped
    else:
        with path.open("rb") as plain:
            yield from plain


def read_topic(settings: Settings, *, idle_timeout: float = 30.0) -> Outcomes:
    """Records of the outcomes topic, every partition from its start to its end at start."""
    return asyncio.run(read_topic_async(settings, idle_timeout=idle_timeout))


async def read_topic_async(settings: Settings, *, idle_timeout: float = 30.0) -> Outcomes:
    topic = settings.topic("outcomes")
    out = Outcomes(source=f"topic {topic}")
    consumer = AIOKafkaConsumer(
        **settings.kafka_client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    try:
        try:
            await consumer.start()
            topics = await consumer.topics()
        except KafkaError as exc:
            raise ReportError(
                f"cannot reach Kafka at {settings.broker_url} ({exc}); check --broker-url "
                "(GOLDENFLOW_BROKER_URL) and the security settings"
            ) from None
        if topic not in topics:
            raise ReportError(
                f"topic {topic} does not exist on {settings.broker_url}; check --topic-prefix "
                f"(GOLDENFLOW_TOPIC_PREFIX, got {settings.topic_prefix!r}) or run a worker first"
            )
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return out
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        try:
            end = await _end_offsets(consumer, settings, tps)
            await _read_until(consumer, end, out, idle_timeout)
        except (KafkaError, TimeoutError) as exc:
            raise ReportError(
                f"reading {topic} from {settings.broker_url} failed after {out.records} "
                f"records ({type(exc).__name__}: {exc}); check the broker and run again"
            ) from None
    finally:
        await consumer.stop()
    return out


async def _end_offsets(consumer: Any, settings: Settings, tps: list[Any]) -> dict[Any, int]:
    if settings.profile == "embedded":
        # The embedded broker answers ListOffsets(LATEST) wrongly after batched produces;
        # fetch responses carry the right high water (see stream.app.embedded).
        return {tp: int(offset) for tp, offset in (await fetch_highwaters(settings, tps)).items()}
    return {tp: int(offset) for tp, offset in (await consumer.end_offsets(tps)).items()}


async def _read_until(
    consumer: Any, end: dict[Any, int], out: Outcomes, idle_timeout: float
) -> None:
    loop = asyncio.get_running_loop()
    pending = {tp for tp in end if await consumer.position(tp) < end[tp]}
    last_progress = loop.time()
    while pending:
        batch = await consumer.getmany(*pending, timeout_ms=500)
        for tp, records in batch.items():
            for rec in records:
                if rec.offset < end[tp]:
                    out.add(rec.value, f"partition {tp.partition} offset {rec.offset}")
        if batch:
            last_progress = loop.time()
        pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
        if pending and loop.time() - last_progress > idle_timeout:
            where = ", ".join(
                [
                    f"partition {tp.partition} at {await consumer.position(tp)} of {end[tp]}"
                    for tp in sorted(pending, key=lambda tp: tp.partition)
                ]
            )
            raise ReportError(
                f"no records arrived for {idle_timeout:.0f} s while reading {out.source} "
                f"({where}); check the broker, or raise --timeout"
            )
