"""The worker's logging keeps the level asked for (no DEBUG records built for nothing)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import faust
import pytest

from stream.app.run import faust_worker
from stream.config import Settings


@pytest.fixture
def root_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    root.handlers = [logging.StreamHandler()]
    yield root
    root.setLevel(level)
    root.handlers = handlers


def test_at_level_warning_the_root_logger_stays_at_warning(
    root_logger: logging.Logger, tmp_path: Path
) -> None:
    settings = Settings(log_level="warning", data_dir=tmp_path)
    app = faust.App("logging-test", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    worker = faust_worker(app, settings)
    root_logger.setLevel(logging.WARNING)
    worker.on_setup_root_logger(root_logger, logging.WARNING)
    assert root_logger.level == logging.WARNING
    assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
    assert not [h for h in root_logger.handlers if type(h).__name__ == "SpinnerHandler"]


def test_faust_would_otherwise_turn_the_root_logger_to_debug(
    root_logger: logging.Logger, tmp_path: Path
) -> None:
    """What faust_worker guards against, on the pinned faust version."""
    app = faust.App("logging-test-2", broker="kafka://127.0.0.1:1", datadir=str(tmp_path))
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    root_logger.setLevel(logging.WARNING)
    worker.on_setup_root_logger(root_logger, logging.WARNING)
    assert root_logger.level == logging.DEBUG
