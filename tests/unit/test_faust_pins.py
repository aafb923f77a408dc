"""Guards for the places goldenflow relies on faust's internals (pinned version)."""

from __future__ import annotations

import inspect
from importlib.metadata import version

from faust.tables.recovery import Recovery

from stream.app.embedded import FAUST_VERSION


def test_faust_is_the_version_the_embedded_recovery_fix_was_checked_against() -> None:
    assert version("faust-streaming") == FAUST_VERSION, (
        "faust-streaming changed: re-check stream/app/embedded.py against its table "
        "recovery, then update FAUST_VERSION"
    )


def test_table_recovery_still_asks_the_consumer_for_changelog_end_offsets() -> None:
    source = inspect.getsource(Recovery._build_highwaters)
    assert "consumer.highwaters(" in source
