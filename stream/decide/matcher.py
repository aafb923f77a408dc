"""durable-rules behind one interface: compile conditions, match facts.

This is the only module that imports durable-rules. A rule book's conditions are
compiled into one durable-rules ruleset; :meth:`RuleMatcher.match` asserts a fact
(a fresh session each time), collects the rules whose actions fire, and deletes
the session's state so the engine holds nothing between evaluations (its C
engine keeps at most 1,024 live sessions).

The compiled form keeps to the operators that behave the same everywhere in the
engine (equality, ``$lt``/``$lte``/``$gt``/``$gte``, ``$and``/``$or``): negation is
pushed down to the atoms, ``!=`` becomes "less or greater", and presence is posted
as explicit 0/1 fields. The semantics are those of
:func:`stream.decide.expressions.evaluate`, and a property test holds the two
together.
"""

from __future__ import annotations

import functools
import itertools
import json
import threading
from collections.abc import Mapping
from typing import Any

import durable_rules_engine
from durable.engine import Host

from stream.decide.expressions import (
    SMALLEST_NUMBER,
    And,
    Between,
    Compare,
    Const,
    Exists,
    In,
    Literal,
    Node,
    Not,
    Or,
    kind_of,
    number_in_range,
)
from stream.errors import GoldenflowError

_names = itertools.count()
_lock = threading.Lock()


@functools.cache
def _quiet_host() -> Host:
    """One durable-rules host for the process, without its background dispatch timers.

    A Host re-arms two threading timers that dispatch queued actions and timers of
    every ruleset; goldenflow uses neither, and nothing should touch the engine
    outside :meth:`RuleMatcher.match`. Cancelling the first timers ends both chains.
    """
    host = Host()
    host._d_timer.cancel()
    host._t_timer.cancel()
    return host


_COMPLEMENT = {"==": "!=", "!=": "==", "<": ">=", "<=": ">", ">": "<=", ">=": "<"}
_DURABLE_OP = {"<": "$lt", "<=": "$lte", ">": "$gt", ">=": "$gte"}
ALWAYS = "gf_always"


def _value_name(field: str, kind: str) -> str:
    return f"gf_v__{field}__{kind}"


def _is_name(field: str, kind: str) -> str:
    return f"gf_is__{field}__{kind}"


def _has_name(field: str) -> str:
    return f"gf_has__{field}"


class _Compiler:
    """AST -> durable-rules condition JSON, recording what each fact must carry."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[str]] = {}  # field -> kinds compared with
        self.present: set[str] = set()  # fields tested with exists

    def compile(self, node: Node, negate: bool = False) -> dict[str, Any]:
        if isinstance(node, Const):
            return {ALWAYS: 1 if node.value != negate else 0}
        if isinstance(node, Not):
            return self.compile(node.inner, not negate)
        if isinstance(node, And | Or):
            parts = [self.compile(p, negate) for p in node.parts]
            conj = isinstance(node, And) != negate
            return {"$and" if conj else "$or": parts}
        if isinstance(node, Exists):
            self.present.add(node.field)
            return {_has_name(node.field): 0 if negate else 1}
        if isinstance(node, Compare):
            return self._compare(node, negate)
        if isinstance(node, In):
            return self._in(node, negate)
        return self._between(node, negate)

    def _kind(self, field: str, kind: str) -> None:
        self.kinds.setdefault(field, set()).add(kind)

    def _atom(self, field: str, op: str, value: Literal) -> dict[str, Any]:
        """field op value, given the field holds a value of value's kind."""
        kind = kind_of(value)
        if kind == "number":
            _check_number(value)  # type: ignore[arg-type]
        name = _value_name(field, kind)
        if op == "==":
            return {name: value}
        if op == "!=":
            if kind == "bool":
                return {name: not value}
            return {"$or": [{"$lt": {name: value}}, {"$gt": {name: value}}]}
        return {_DURABLE_OP[op]: {name: value}}

    def _guarded(self, field: str, kind: str, cond: dict[str, Any]) -> dict[str, Any]:
        return {"$and": [{_is_name(field, kind): 1}, cond]}

    def _absent_or(self, field: str, kind: str, cond: dict[str, Any]) -> dict[str, Any]:
        return {"$or": [{_is_name(field, kind): 0}, cond]}

    def _compare(self, node: Compare, negate: bool) -> dict[str, Any]:
        kind = kind_of(node.value)
        self._kind(node.field, kind)
        if node.value is None:  # comparing with null: never true (null counts as missing)
            return {ALWAYS: 1 if negate else 0}
        if not negate:
            return self._guarded(node.field, kind, self._atom(node.field, node.op, node.value))
        flipped = self._atom(node.field, _COMPLEMENT[node.op], node.value)
        return self._absent_or(node.field, kind, flipped)

    def _in(self, node: In, negate: bool) -> dict[str, Any]:
        by_kind: dict[str, list[Literal]] = {}
        for value in node.values:
            if value is not None:
                by_kind.setdefault(kind_of(value), []).append(value)
        for kind in by_kind:
            self._kind(node.field, kind)
        if not by_kind:
            return {ALWAYS: 1 if negate else 0}
        member = not node.negated  # "in" holds for a member; "not in" for a non-member
        terms = []
        for kind, values in by_kind.items():
            eq = [self._atom(node.field, "==", v) for v in values]
            ne = [self._atom(node.field, "!=", v) for v in values]
            if not negate:  # present in this kind and (member or not, as asked)
                inner = {"$or": eq} if member else {"$and": ne}
                terms.append(self._guarded(node.field, kind, inner))
            else:  # for every kind: absent in it, or the opposite membership
                inner = {"$and": ne} if member else {"$or": eq}
                terms.append(self._absent_or(node.field, kind, inner))
        return {"$and" if negate else "$or": terms}

    def _between(self, node: Between, negate: bool) -> dict[str, Any]:
        _check_number(node.low)
        _check_number(node.high)
        self._kind(node.field, "number")
        name = _value_name(node.field, "number")
        if not negate:
            inside = {"$and": [{"$gte": {name: node.low}}, {"$lte": {name: node.high}}]}
            return self._guarded(node.field, "number", inside)
        outside = {"$or": [{"$lt": {name: node.low}}, {"$gt": {name: node.high}}]}
        return self._absent_or(node.field, "number", outside)


class _UnsupportedNumber(ValueError):
    pass


def _check_number(value: float) -> None:
    if not number_in_range(value):
        raise _UnsupportedNumber(f"{value!r} is outside the numbers the engine reads")


#: What a fact value of magnitude in (0, SMALLEST_NUMBER) is posted as: it orders the
#: same against every number a condition may hold, and has no exponent notation.
_TINY = SMALLEST_NUMBER / 2


def _plain(value: Any) -> Any:
    """A fact value the engine can read (it reads no exponent notation), comparing with
    every allowed condition number exactly as the value itself does."""
    if isinstance(value, float) and "e" in repr(value):
        if abs(value) < 1:
            return _TINY if value > 0 else -_TINY
        return int(value)
    return value


class RuleEngineError(GoldenflowError):
    """durable-rules refused a compiled condition (typically: too many alternatives)."""

    def __init__(self, rule_ids: list[str], detail: str) -> None:
        self.rule_ids = rule_ids
        super().__init__(
            f"the rules engine cannot take the condition of {', '.join(rule_ids) or 'a rule'} "
            f"({detail}); split it into several rules with fewer 'or' alternatives"
        )


def _culprits(conditions: Mapping[str, Node]) -> list[str]:
    """The rules whose condition the engine refuses on its own."""
    bad = []
    for rule_id, node in conditions.items():
        try:
            probe = {"r": {"all": [{"m": _Compiler().compile(node)}]}}
        except _UnsupportedNumber:
            bad.append(rule_id)
            continue
        try:
            handle = durable_rules_engine.create_ruleset(
                f"goldenflow_probe_{next(_names)}", json.dumps(probe)
            )
        except durable_rules_engine.error:
            bad.append(rule_id)
        else:
            durable_rules_engine.delete_ruleset(handle)
    return bad


class RuleMatcher:
    """Match facts against a set of named conditions with durable-rules."""

    def __init__(self, conditions: Mapping[str, Node]) -> None:
        compiler = _Compiler()
        self._ids = list(conditions)
        self._hits: list[int] = []
        definition: dict[str, Any] = {}
        try:
            for index, rule_id in enumerate(self._ids):
                definition[f"r{index}"] = {
                    "all": [{"m": compiler.compile(conditions[rule_id])}],
                    "run": self._action(index),
                }
        except _UnsupportedNumber as exc:
            raise RuleEngineError(_culprits(conditions), str(exc)) from None
        # A rule that always matches: with no match the engine raises, leaves no session
        # state, and deleting that state crashes it. With this, every fact is handled.
        definition["always"] = {"all": [{"m": {ALWAYS: 1}}], "run": self._action(-1)}
        self._kinds = {field: tuple(sorted(kinds)) for field, kinds in compiler.kinds.items()}
        self._present = tuple(sorted(compiler.present | set(compiler.kinds)))
        self.name = f"goldenflow_{next(_names)}"
        self._host = _quiet_host()
        with _lock:
            try:
                self._host.register_rulesets({self.name: definition})
            except durable_rules_engine.error as exc:
                raise RuleEngineError(_culprits(conditions), str(exc)) from None

    def _action(self, index: int) -> Any:
        def run(c: Any) -> None:
            self._hits.append(index)

        return run

    def prepare(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        """The document posted to the engine: typed values and presence flags."""
        doc: dict[str, Any] = {ALWAYS: 1}
        for field in self._present:
            value = fact.get(field)
            kind = kind_of(value) if value is not None else "none"
            doc[_has_name(field)] = 1 if kind not in ("none", "other") else 0
            for wanted in self._kinds.get(field, ()):
                same = kind == wanted
                doc[_is_name(field, wanted)] = 1 if same else 0
                if same:
                    doc[_value_name(field, wanted)] = _plain(value)
        return doc

    def match(self, fact: Mapping[str, Any]) -> list[str]:
        """Ids of the rules whose condition holds for ``fact``, in definition order."""
        doc = self.prepare(fact)
        with _lock:
            self._hits.clear()
            doc["sid"] = "0"
            self._host.assert_fact(self.name, doc)  # the sentinel rule always matches
            self._host.delete_state(self.name, "0")
            hits = sorted(set(self._hits) - {-1})
        return [self._ids[i] for i in hits]
