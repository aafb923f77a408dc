"""What every importer shares: source files, ids, counts, and the sorted events file.

An importer turns source rows into *groups* of event objects (one group per source
row, or per order), never holding a whole file. :func:`write_events` validates each
group against the event contract (a group with an invalid event is skipped whole and
counted), sorts every event by event time, then user, then event id (spilling sorted
runs to disk when there are many, so memory stays bounded), drops exact duplicates
(the same event id at the same time: an identical source row read twice) and writes
one JSON object per line, gzip-compressed when the name ends in ``.gz``. The output
depends only on the input: the same rows give the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import heapq
import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import orjson

from stream.domain.events import validate
from stream.domain.timeutil import MINUTE, format_ts
from stream.errors import GoldenflowError, InvalidEvent

#: Events kept in memory before a sorted run is spilled to disk.
RUN_SIZE: Final = 500_000
#: Sorted runs merged at once (each is an open file).
MERGE_FAN_IN: Final = 64
#: Payment window given to orders that the source shows as paid at once.
PAID_AT_ONCE_WINDOW_MS: Final = 30 * MINUTE

Event = dict[str, Any]
_Key = tuple[int, str, str]
#: (event time ms, user id, event id, type, JSON bytes): sorted on the first three.
_Record = tuple[int, str, str, str, bytes]


class ImportFailed(GoldenflowError):
    """A source cannot be imported at all (unreadable, or not the dataset's format)."""


@dataclass
class Stats:
    """What one import read, wrote and skipped, and why."""

    dataset: str
    files: int = 0
    rows: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] += 1

    @property
    def written(self) -> int:
        return sum(self.events.values())

    def summary(self) -> str:
        lines = [
            f"{self.dataset}: read {self.rows:,} rows from {self.files} file(s); "
            f"wrote {self.written:,} events; skipped {sum(self.skipped.values()):,} rows; "
            f"dropped {self.duplicates:,} duplicate events"
        ]
        lines.extend(f"  {note}" for note in self.notes)
        lines.extend(f"  {n:>10,}  {t}" for t, n in sorted(self.events.items()))
        lines.extend(
            f"  skipped {n:>10,}  {reason}"
            for reason, n in sorted(self.skipped.items(), key=lambda kv: (-kv[1], kv[0]))
        )
        return "\n".join(lines)


def source_files(
    sources: Iterable[Path], suffixes: tuple[str, ...] = (".csv", ".csv.gz")
) -> list[Path]:
    """The given files, with each folder replaced by its files of those suffixes (by name)."""
    files: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = sorted(p for p in src.iterdir() if p.is_file() and p.name.endswith(suffixes))
            if not found:
                raise ImportFailed(f"{src}: no {' or '.join(suffixes)} files in this folder")
            files.extend(found)
        elif src.is_file():
            files.append(src)
        else:
            raise ImportFailed(f"{src}: no such file or folder")
    return files


def open_text(path: Path) -> IO[str]:
    """Open a source file as text; ``.gz`` files are decompressed on the fly."""
    try:
        if path.name.endswith(".gz"):
            return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read ({exc.strerror or exc})") from None


def column_index(path: Path, header: Sequence[str], wanted: Sequence[str]) -> dict[str, int]:
    """Position of each wanted column in a header row; fail naming what is missing."""
    names = [h.strip() for h in header]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise ImportFailed(
            f"{path}: missing column(s) {', '.join(missing)}; the header has {', '.join(names)}"
        )
    return {w: names.index(w) for w in wanted}


def row_id(dataset: str, *fields: str) -> str:
    """A stable id of a source row (or group of rows): the dataset and a hash of the fields."""
    text = "\x1f".join((dataset, *fields))
    return f"{dataset}-{hashlib.blake2b(text.encode(), digest_size=12).hexdigest()}"


def event(type_: str, rid: str, user_id: str, ts_ms: int, **fields: Any) -> Event:
    """One event object; its id is the row id and the type (one event of a type per row).

    Fields given as None are left out.
    """
    body: Event = {
        "event_id": f"{rid}-{type_}",
        "type": type_,
        "user_id": user_id,
        "ts": format_ts(ts_ms),
    }
    body.update((k, v) for k, v in fields.items() if v is not None)
    return body


def money(value: float) -> float:
    return round(value, 2)


def paid_purchase(
    rid: str,
    user_id: str,
    ts_ms: int,
    items: list[dict[str, Any]],
    **extra: Any,
) -> list[Event]:
    """A purchase the source records as done: the whole funnel, 1 ms apart, paid.

    checkout_start, checkout_submit, order_created (payment window
    :data:`PAID_AT_ONCE_WINDOW_MS`), payment_success, order_paid. The steps are 1 ms
    apart from the source time on so that they sort and apply in funnel order.
    """
    amount = money(sum(i["price"] * i.get("qty", 1) for i in items))
    checkout_id, order_id = f"{rid}-checkout", f"{rid}-order"
    created = ts_ms + 2
    deadline = format_ts(created + PAID_AT_ONCE_WINDOW_MS)
    ids = {"checkout_id": checkout_id}
    return [
        event("checkout_start", rid, user_id, ts_ms, **ids, items=items, amount=amount, **extra),
        event(
            "checkout_submit",
            rid,
            user_id,
            ts_ms + 1,
            **ids,
            order_id=order_id,
            amount=amount,
            **extra,
        ),
        event(
            "order_created",
            rid,
            user_id,
            created,
            order_id=order_id,
            **ids,
            items=items,
            amount=amount,
            pay_deadline=deadline,
            **extra,
        ),
        event(
            "payment_success", rid, user_id, ts_ms + 3, order_id=order_id, amount=amount, **extra
        ),
        event("order_paid", rid, user_id, ts_ms + 4, order_id=order_id, amount=amount, **extra),
    ]


# -- the sorted events file ------------------------------------------------------------


class _Runs:
    """Events sorted by (ts, user, event id); sorted runs spill to a work folder."""

    def __init__(self, workdir: Path, run_size: int) -> None:
        self.workdir = workdir
        self.run_size = max(1, run_size)
        self.buffer: list[_Record] = []
        self.runs: list[Path] = []
        self.made = 0

    def add(self, record: _Record) -> None:
        self.buffer.append(record)
        if len(self.buffer) >= self.run_size:
            self._spill()

    def _spill(self) -> None:
        self.buffer.sort()
        self.runs.append(self._write_run(self.buffer))
        self.buffer = []

    def _write_run(self, records: Iterable[_Record]) -> Path:
        self.made += 1
        path = self.workdir / f"run-{self.made:06d}"
        with path.open("wb") as f:
            for ts, user_id, event_id, type_, body in records:
                # JSON text never holds a raw tab or newline: safe separators.
                f.write(orjson.dumps([ts, user_id, event_id, type_]) + b"\t" + body + b"\n")
        return path

    @staticmethod
    def _read_run(path: Path) -> Iterator[_Record]:
        with path.open("rb") as f:
            for line in f:
                key, _, body = line.rstrip(b"\n").partition(b"\t")
                ts, user_id, event_id, type_ = orjson.loads(key)
                yield ts, user_id, event_id, type_, body

    def sorted(self) -> Iterator[_Record]:
        if not self.runs:
            self.buffer.sort()
            yield from self.buffer
            return
        if self.buffer:
            self._spill()
        runs = self.runs
        while len(runs) > MERGE_FAN_IN:
            merged = []
            for i in range(0, len(runs), MERGE_FAN_IN):
                group = runs[i : i + MERGE_FAN_IN]
                merged.append(self._write_run(heapq.merge(*map(self._read_run, group))))
                for path in group:
                    path.unlink()
            runs = merged
        self.runs = runs
        yield from heapq.merge(*map(self._read_run, runs))


def write_events(
    groups: Iterable[list[Event]], out: Path, stats: Stats, run_size: int = RUN_SIZE
) -> Stats:
    """Validate, sort, deduplicate and write the events; return the counts."""
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".import-", dir=out.parent) as work:
            runs = _Runs(Path(work), run_size)
            for group in groups:
                try:
                    checked = [validate(ev) for ev in group]
                except InvalidEvent as exc:
                    stats.skip(f"invalid after mapping ({exc.code})")
                    continue
                for ev, raw in zip(checked, group, strict=True):
                    runs.add((ev.ts, ev.user_id, ev.event_id, ev.type, orjson.dumps(raw)))
            with partial.open("wb") as raw_out:
                if out.name.endswith(".gz"):
                    # No name and a zero time in the gzip header: same events, same bytes.
                    with gzip.GzipFile(
                        filename="", mode="wb", fileobj=raw_out, mtime=0, compresslevel=6
                    ) as gz:
                        _write_sorted(runs, gz.write, stats)
                else:
                    _write_sorted(runs, raw_out.write, stats)
        os.replace(partial, out)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ImportFailed(f"import into {out} failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return stats


def _write_sorted(runs: _Runs, write: Callable[[bytes], object], stats: Stats) -> None:
    previous: _Key | None = None
    buffer: list[bytes] = []
    for ts, user_id, event_id, type_, body in runs.sorted():
        key = (ts, user_id, event_id)
        if key == previous:
            stats.duplicates += 1
            continue
        previous = key
        buffer.append(body)
        stats.events[type_] += 1
        if len(buffer) >= 4096:
            write(b"\n".join(buffer) + b"\n")
            buffer.clear()
    if buffer:
        write(b"\n".join(buffer) + b"\n")
