"""Importers: public shop datasets converted into goldenflow's event contract.

Each dataset module has ``read(sources, stats)``, which yields the events of each
source row (a group), and :func:`run_import` sorts, deduplicates and writes them as
JSON lines (see :mod:`stream.importers.common`). docs/importers.md describes every
mapping and inference.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from stream.importers import olist, rees46, taobao
from stream.importers.common import RUN_SIZE, Event, ImportFailed, Stats, write_events

Reader = Callable[[Iterable[Path], Stats], Iterator[list[Event]]]

DATASETS: Final[dict[str, Reader]] = {
    "rees46": rees46.read,
    "taobao": taobao.read,
    "olist": olist.read,
}

__all__ = ["DATASETS", "ImportFailed", "Stats", "run_import"]


def run_import(dataset: str, sources: Sequence[Path], out: Path, run_size: int = RUN_SIZE) -> Stats:
    """Convert the source files (or folders) of one dataset into a sorted events file."""
    read = DATASETS.get(dataset)
    if read is None:
        raise ImportFailed(f"unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}")
    stats = Stats(dataset)
    return write_events(read(sources, stats), out, stats, run_size)
