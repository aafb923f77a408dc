"""Start a worker process: check rules, create topics, run the Faust worker."""

from __future__ import annotations

import asyncio
import logging

from faust.worker import Worker
from prometheus_client import CollectorRegistry

from stream.app.topics import ensure_topics
from stream.app.worker import build_app
from stream.config import Settings
from stream.decide.rulebook import load_rulebook

log = logging.getLogger("goldenflow.worker")


def run_worker(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT. Raises RuleFileError before starting on bad rules."""
    rulebook = load_rulebook(settings.rules_dir)
    asyncio.run(ensure_topics(settings))
    app = build_app(settings, rulebook, CollectorRegistry())
    worker = Worker(app, loglevel=settings.log_level, quiet=True)
    log.info("rules %s loaded from %s", rulebook.version, settings.rules_dir)
    worker.execute_from_commandline()
