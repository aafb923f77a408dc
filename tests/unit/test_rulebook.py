from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stream.decide.durations import format_duration, parse_duration
from stream.decide.rulebook import load_rulebook
from stream.errors import RuleFileError
from tests.helpers import RULES


def copy_rules(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(RULES, target)
    return target


def test_shipped_rules_load_with_a_content_version() -> None:
    book = load_rulebook(RULES)
    assert book.timing.cart_dwell("fresh_food") == 10 * 60_000
    assert len(book.version) == 12
    assert load_rulebook(RULES).version == book.version


def test_version_changes_with_content(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    before = load_rulebook(rules).version
    (rules / "timing.yaml").write_text(
        (rules / "timing.yaml").read_text().replace("fresh_food: 10m", "fresh_food: 12m")
    )
    assert load_rulebook(rules).version != before


REST = "checkout_abandon: {after: 20m}\npayment_stall: {after: 10m}\nunpaid_order: {lead: 15m}\n"


@pytest.mark.parametrize(
    ("file", "text", "line", "fragment"),
    [
        ("timing.yaml", "cart_stall:\n  default_dwell: 1h\n  dwell: {books: [\n", 4, "YAML syntax"),
        (
            "timing.yaml",
            "cart_stall:\n  default_dwell: 1h\n  dwel:\n    books: 2h\n" + REST,
            3,
            "unknown field",
        ),
        (
            "timing.yaml",
            "cart_stall:\n  default_dwell: 1h\n  dwell:\n    books: soon\n" + REST,
            4,
            "not a duration",
        ),
        (
            "timing.yaml",
            "cart_stall:\n  default_dwell: 1h\n  default_dwell: 2h\n",
            3,
            "duplicate key",
        ),
        (
            "cart_stall.rules.yaml",
            "ruleset: x\nrules:\n  - id: a\n    owner: me\n    priority: 1\n"
            "    when: 'true'\n    then: {type: teleport, channel: push}\n",
            7,
            "teleport",
        ),
    ],
)
def test_problems_are_reported_as_file_and_line(
    tmp_path: Path, file: str, text: str, line: int, fragment: str
) -> None:
    rules = copy_rules(tmp_path)
    (rules / file).write_text(text)
    with pytest.raises(RuleFileError) as info:
        load_rulebook(rules)
    problems = info.value.problems
    assert len(problems) == 1, problems
    assert problems[0].path.endswith(file)
    assert problems[0].line == line
    assert fragment in problems[0].message
    assert str(problems[0]).startswith(f"{rules / file}:{line}: ")


def test_problems_in_several_files_are_all_reported(tmp_path: Path) -> None:
    rules = copy_rules(tmp_path)
    (rules / "timing.yaml").write_text("cart_stall: [\n")
    (rules / "cart_stall.rules.yaml").write_text("ruleset: x\nrules: []\nextra: 1\n")
    with pytest.raises(RuleFileError) as info:
        load_rulebook(rules)
    assert sorted(Path(p.path).name for p in info.value.problems) == [
        "cart_stall.rules.yaml",
        "timing.yaml",
    ]


def test_durations() -> None:
    assert parse_duration("1h30m") == 90 * 60_000
    assert parse_duration("250ms") == 250
    assert format_duration(parse_duration("2d3h")) == "2d3h"
    with pytest.raises(ValueError, match="90s, 15m"):
        parse_duration("10 minutes")
