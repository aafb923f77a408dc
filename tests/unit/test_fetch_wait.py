"""The fetch wait given to the worker's consumer is the one it starts its fetcher with."""

from __future__ import annotations

import asyncio

import faust
import pytest

from stream.app.fetch_wait import set_fetch_wait
from stream.config import EMBEDDED_FETCH_WAIT_MS, Settings


def worker_consumer_wait(app: faust.App) -> int:
    async def build() -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        return int(consumer._fetch_max_wait_ms)

    return asyncio.run(build())


def test_a_set_wait_replaces_fausts() -> None:
    app = faust.App("fetch-wait-set", broker="kafka://127.0.0.1:1")
    set_fetch_wait(app, 10)
    assert worker_consumer_wait(app) == 10


def test_without_it_faust_keeps_its_own_wait() -> None:
    assert (
        worker_consumer_wait(faust.App("fetch-wait-default", broker="kafka://127.0.0.1:1")) == 1500
    )


def test_the_embedded_profile_waits_briefly_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOLDENFLOW_FETCH_WAIT_MS", raising=False)
    assert Settings(profile="embedded").fetch_wait == EMBEDDED_FETCH_WAIT_MS == 10
    assert Settings(profile="embedded", fetch_wait_ms=1500).fetch_wait == 1500
    assert Settings(profile="production").fetch_wait is None  # faust's own 1.5 s
    assert Settings(profile="production", fetch_wait_ms=50).fetch_wait == 50
