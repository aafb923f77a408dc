"""Start a worker process: check rules, create topics, run the Faust worker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.worker import Worker
from prometheus_client import CollectorRegistry

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


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT. Raises RuleFileError before starting on bad rules."""
    rulebook = load_rulebook(settings.rules_dir)
    asyncio.run(ensure_topics(settings))
    app = build_app(settings, rulebook, CollectorRegistry())
    worker = faust_worker(app, settings)
    log.info("rules %s loaded from %s", rulebook.version, settings.rules_dir)
    worker.execute_from_commandline()
