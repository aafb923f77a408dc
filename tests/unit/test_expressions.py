"""The rule condition language: parsing, semantics, and that nothing in it runs code."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.decide.expressions import (
    And,
    Between,
    Compare,
    Exists,
    ExpressionError,
    In,
    Not,
    Or,
    evaluate,
    fields,
    parse,
)

FACT = {
    "category": "fresh_food",
    "cart_value": 42.5,
    "prior_stalls": 2,
    "segment": "vip",
    "intent": 0.7,
    "failure_reason": None,
}


def test_parses_into_plain_nodes() -> None:
    node = parse("category == 'fresh_food' and (cart_value > 20 or segment in ['vip', 'new'])")
    assert node == And(
        (
            Compare("category", "==", "fresh_food"),
            Or((Compare("cart_value", ">", 20), In("segment", ("vip", "new")))),
        )
    )
    assert parse("intent between 0.2 and 0.8") == Between("intent", 0.2, 0.8)
    assert parse("not exists failure_reason") == Not(Exists("failure_reason"))
    assert parse('segment not in ["x"]') == In("segment", ("x",), negated=True)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("true", True),
        ("false", False),
        ("category == 'fresh_food'", True),
        ("category != 'books'", True),
        ("cart_value >= 42.5 and prior_stalls < 3", True),
        ("cart_value > 100 or segment == 'vip'", True),
        ("not (segment == 'vip')", False),
        ("segment in ['new', 'regular']", False),
        ("segment not in ['new', 'regular']", True),
        ("intent between 0.5 and 0.9", True),
        ("exists segment", True),
        ("exists failure_reason", False),  # null counts as missing
        ("failure_reason == 'card_declined'", False),
        ("failure_reason != 'card_declined'", False),  # missing: every comparison is false
        ("not exists missing_field", True),
        ("missing_field < 3", False),
        ("category < 5", False),  # text against a number: false, not an error
    ],
)
def test_semantics(condition: str, expected: bool) -> None:
    assert evaluate(parse(condition), FACT) is expected


def test_fields_read_in_order_of_first_use() -> None:
    node = parse("segment == 'vip' and (cart_value > 1 or segment == 'new') and exists intent")
    assert fields(node) == ["segment", "cart_value", "intent"]


@pytest.mark.parametrize(
    ("condition", "column", "fragment"),
    [
        ("cart_value >", 13, "expected a value"),
        ("__import__('os')", 1, "function calls are not allowed"),
        ("open('/etc/passwd') == 'x'", 1, "function calls are not allowed"),
        ("fact.category == 'x'", 5, "attribute access is not allowed"),
        ("items[0] == 'x'", 6, "indexing is not allowed"),
        ("cart_value + 1 > 2", 12, "arithmetic is not allowed"),
        ("category == other_field", 13, "compare a field with a value"),
        ("(category == 'x'", 17, "expected ')'"),
        ("category == 'x' and", 20, "expected a field name"),
        ("category 'x'", 10, "expected a comparison"),
        ("intent between 0.9 and 0.1", 8, "low end is above the high"),
        ("segment not 'x'", 13, "expected 'in'"),
        ("", 1, "empty condition"),
        ("intent > 0.0001", 10, "out of range"),
        ("amount < 1000000000000000", 10, "out of range"),
        ("segment == 'vip' extra", 18, "unexpected 'extra'"),
    ],
)
def test_errors_say_what_and_where(condition: str, column: int, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        parse(condition)
    assert fragment in info.value.message
    assert info.value.column == column


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("not " * 100 + "true")
    with pytest.raises(ExpressionError, match="nested more than"):
        parse("(" * 100 + "true" + ")" * 100)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    try:
        node = parse(text)
    except ExpressionError as exc:
        assert 1 <= exc.column <= len(text) + 1
        return
    evaluate(node, FACT)  # whatever parsed evaluates without raising


_word = st.sampled_from(
    [
        "category",
        "segment",
        "intent",
        "and",
        "or",
        "not",
        "in",
        "(",
        ")",
        "==",
        "<",
        "'vip'",
        "3",
        "[",
        "]",
        ",",
        "exists",
        "between",
        "true",
        "__import__",
        ".",
        "os",
        "open",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_word, max_size=25))
def test_token_soup_never_executes_anything(words: list[str]) -> None:
    text = " ".join(words)
    try:
        node = parse(text)
    except ExpressionError:
        return
    assert isinstance(evaluate(node, FACT), bool)
