"""The replay's HTML report (being written): see write_html."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream.decide.rulebook import RuleBook
from stream.replay.run import ReplayResult


def write_html(
    path: Path, runs: list[tuple[str, ReplayResult, RuleBook]], comparison: dict[str, Any] | None
) -> None:
    raise NotImplementedError("the HTML report is not written yet")
