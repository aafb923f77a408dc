"""durable-rules matching agrees with the reference semantics of the condition language."""

from __future__ import annotations

import os
import resource
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from stream.decide.expressions import (
    And,
    Between,
    Compare,
    Const,
    Exists,
    In,
    Node,
    Not,
    Or,
    evaluate,
    parse,
)
from stream.decide.matcher import RuleEngineError, RuleMatcher

FIELDS = {
    "amount": st.integers(-5, 5) | st.floats(-5, 5, allow_nan=False),
    "segment": st.sampled_from(["vip", "new", "regular", ""]),
    "member": st.booleans(),
}
ANY_VALUE = st.none() | st.integers(-5, 5) | st.sampled_from(["vip", "new", "x"]) | st.booleans()


def literal_for(field: str) -> st.SearchStrategy[Any]:
    return FIELDS[field]


@st.composite
def atoms(draw: st.DrawFn) -> Node:
    field = draw(st.sampled_from([*FIELDS, "ghost"]))
    strategy = FIELDS.get(field, FIELDS["segment"])
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return Exists(field)
    if choice == 1:
        values = tuple(draw(st.lists(strategy | ANY_VALUE, min_size=1, max_size=3)))
        return In(field, values, draw(st.booleans()))
    if choice == 2 and field == "amount":
        low = draw(st.integers(-5, 5))
        return Between(field, low, low + draw(st.integers(0, 5)))
    if choice == 3:
        return Const(draw(st.booleans()))
    value = draw(strategy | ANY_VALUE)
    ops = (
        ["==", "!="]
        if isinstance(value, bool) or value is None
        else ["==", "!=", "<", "<=", ">", ">="]
    )
    return Compare(field, draw(st.sampled_from(ops)), value)


conditions = st.recursive(
    atoms(),
    lambda inner: st.one_of(
        inner.map(Not),
        st.lists(inner, min_size=2, max_size=3).map(lambda ps: And(tuple(ps))),
        st.lists(inner, min_size=2, max_size=3).map(lambda ps: Or(tuple(ps))),
    ),
    max_leaves=6,
)
facts = st.fixed_dictionaries({}, optional={f: ANY_VALUE | s for f, s in FIELDS.items()})


@settings(max_examples=150, deadline=None)
@example([In("amount", (0,))], [{"amount": 3.05e-100}, {"amount": -1e-7}, {"amount": 2e20}])
@example(
    [Compare("amount", ">", 0), Compare("amount", "<", 4.5)],
    [{"amount": 1e-300}, {"amount": -1e-300}],
)
@given(st.lists(conditions, min_size=1, max_size=6), st.lists(facts, min_size=1, max_size=8))
def test_durable_rules_matches_exactly_what_the_reference_semantics_say(
    conds: list[Node], examples: list[dict[str, Any]]
) -> None:
    named = {f"rule-{i}": c for i, c in enumerate(conds)}
    try:
        matcher = RuleMatcher(named)
    except RuleEngineError:
        assume(False)  # refused as too complex: the rule checker reports it (tested below)
        return
    for fact in examples:
        expected = [rule for rule, cond in named.items() if evaluate(cond, fact)]
        assert matcher.match(fact) == expected, (fact, named)


def test_typical_rules() -> None:
    named = {
        "fresh": parse("category == 'fresh_food' and cart_value >= 15"),
        "vip": parse("segment in ['vip'] and not exists failure_reason"),
        "declined": parse("failure_reason != 'risk_review' and intent between 0.2 and 0.8"),
        "always": parse("true"),
    }
    matcher = RuleMatcher(named)
    fact = {
        "category": "fresh_food",
        "cart_value": 20.0,
        "segment": "vip",
        "intent": 0.5,
        "failure_reason": None,
    }
    assert matcher.match(fact) == ["fresh", "vip", "always"]
    fact2 = {
        "category": "books",
        "segment": "new",
        "intent": 0.5,
        "failure_reason": "card_declined",
    }
    assert matcher.match(fact2) == ["declined", "always"]


def test_a_fact_no_rule_matches_is_fine() -> None:
    matcher = RuleMatcher({"only": parse("segment == 'new'")})
    for _ in range(3):
        assert matcher.match({"segment": "vip"}) == []
        assert matcher.match({}) == []
    assert matcher.match({"segment": "new"}) == ["only"]


def test_a_condition_too_complex_for_the_engine_is_refused_by_name() -> None:
    alternatives = " or ".join(f"(a == {i} or b == {i})" for i in range(8))
    wide = " and ".join(f"({alternatives})" for _ in range(4))
    with pytest.raises(RuleEngineError) as info:
        RuleMatcher({"ok": parse("a == 1"), "wide": parse(wide)})
    assert info.value.rule_ids == ["wide"]
    assert "split it" in str(info.value)


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def test_a_million_evaluations_leave_memory_flat() -> None:
    matcher = RuleMatcher(
        {
            "fresh": parse("category == 'fresh_food' and cart_value >= 15"),
            "vip": parse("segment in ['vip', 'regular'] and not exists failure_reason"),
            "mid": parse("intent between 0.2 and 0.8"),
        }
    )
    facts = [
        {"category": c, "cart_value": v, "segment": s, "intent": i / 10}
        for c in ("fresh_food", "books")
        for v in (5, 20)
        for s in ("vip", "new")
        for i in range(10)
    ]
    after_first = 0
    for n in range(1_000_000):
        matcher.match(facts[n % len(facts)])
        if n == 100_000:
            after_first = rss_bytes()
    assert rss_bytes() <= after_first * 1.10


def test_the_engine_calls_the_matcher_makes_are_those_of_the_pinned_durable_rules() -> None:
    """The matcher makes the calls durable-rules' Python host makes; checked against
    durable-rules 2.0.28 (its host, ``durable.engine``, makes the same ones)."""
    import inspect
    from importlib.metadata import version

    import durable.engine
    import durable_rules_engine

    assert version("durable_rules") == "2.0.28", (
        "durable-rules changed: re-check stream/decide/matcher.py against durable.engine "
        "(the calls below and the result code 3), then update this pin"
    )
    host = inspect.getsource(durable.engine)
    for call in (
        "assert_fact",
        "start_action_for_state",
        "update_state",
        "complete_and_start_action",
        "delete_state",
        "create_ruleset",
    ):
        assert callable(getattr(durable_rules_engine, call)), call
        assert f"durable_rules_engine.{call}(" in host, call
    assert callable(durable_rules_engine.delete_ruleset)  # freeing a refused ruleset
