"""The fetch wait the worker's consumer gets."""

from __future__ import annotations

from stream.app.fetch_wait import fetch_wait_ms
from stream.config import Settings


def test_fausts_wait_unless_one_is_set() -> None:
    assert fetch_wait_ms(Settings(profile="embedded")) is None
    assert fetch_wait_ms(Settings(profile="production")) is None
    assert fetch_wait_ms(Settings(profile="embedded", fetch_wait_ms=10)) == 10
    assert fetch_wait_ms(Settings(profile="production", fetch_wait_ms=100)) == 100
