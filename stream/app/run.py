"""Start a worker process: check rules, create topics, run the Faust worker."""

from __future__ import annotations

import asyncio
import gc
import logging
from typing import Any

from faust.worker import Worker
from prometheus_client import CollectorRegistry

from stream.app.malloc import pin_mmap_threshold
from stream.app.topics import ensure_topics
from stream.app.worker import build_app
from stream.config import Settings
from stream.decide.rulebook import load_rulebook

log = logging.getLogger("goldenflow.worker")


def faust_worker(app: Any, settings: Settings) -> Worker:
    """Faust's worker for ``app``, without its terminal spinner.

    At level warning and above faust's worker draws a spinner that turns on every
    log record: it sets the root logger to DEBUG, so every debug call of aiokafka
    (several per message produced) builds a record that nobody prints (about 8% of
    a busy worker's time). Without it the root logger keeps the level asked for.
    """
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    worker.spinner = None
    return worker


#: The collector's thresholds in a worker (Python's default: 700, 10, 10).
GC_THRESHOLDS = (20_000, 20, 20)


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT. Raises RuleFileError before starting on bad rules."""
    pin_mmap_threshold()  # before any large buffer is freed (stream/app/malloc.py)
    rulebook = load_rulebook(settings.rules_dir)
    asyncio.run(ensure_topics(settings))
    app = build_app(settings, rulebook, CollectorRegistry())
    worker = faust_worker(app, settings)
    # A batch allocates tens of thousands of short-lived objects (faust's events,
    # decoded journeys, records); with the default thresholds many outlive a young
    # collection, are promoted, and trigger full collections of 30-70 ms that
    # stall the event loop (measured: 46 in a 2-minute benchmark, 50-70 ms each).
    # Collecting the young generation less often lets them die young instead.
    gc.set_threshold(*GC_THRESHOLDS)
    log.info("rules %s loaded from %s", rulebook.version, settings.rules_dir)
    worker.execute_from_commandline()
