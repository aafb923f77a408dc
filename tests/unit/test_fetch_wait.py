"""The fetch wait the worker's consumer gets, per profile and setting."""

from __future__ import annotations

from stream.app.fetch_wait import EMBEDDED_FETCH_WAIT_MS, fetch_wait_ms
from stream.config import Settings


def test_the_embedded_profile_waits_briefly_and_production_keeps_fausts_wait() -> None:
    assert fetch_wait_ms(Settings(profile="embedded")) == EMBEDDED_FETCH_WAIT_MS == 10
    assert fetch_wait_ms(Settings(profile="production")) is None


def test_a_set_wait_applies_to_any_broker() -> None:
    assert fetch_wait_ms(Settings(profile="embedded", fetch_wait_ms=500)) == 500
    assert fetch_wait_ms(Settings(profile="production", fetch_wait_ms=100)) == 100
