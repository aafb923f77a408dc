"""durable-rules behind one interface: compile conditions, match facts.

This is the only module that imports durable-rules. A rule book's conditions are
compiled into one durable-rules ruleset; :meth:`RuleMatcher.match` asserts a fact
(a fresh session each time), collects the rules whose actions fire, and deletes
the session's state so the engine holds nothing between evaluations (its C
engine keeps at most 1,024 live sessions).

The matcher drives durable-rules' engine (``durable_rules_engine``) through the
same calls its Python host makes for a fact (assert, start each action, update
the state, complete the action, delete the state), without the host's per-action
closures and repeated JSON round trips: the engine decides, the Python layer only
reads which rules' actions it started.

Facts repeat: the engine's answer depends only on the document posted, and a number
in it only on where it falls among the numbers the conditions compare that field
with. So each matcher keeps the engine's answers by that *class* of document (text
and booleans as they are, each number as its interval between the conditions'
numbers): a fact of a class seen before gets the answer the engine gave, without the
round trip. A number the engine might read differently from Python (not finite, or a
whole number past 2**53) and a list or mapping are never cached: the engine decides.

The compiled form keeps to the operators that behave the same everywhere in the
engine (equality, ``$lt``/``$lte``/``$gt``/``$gte``, ``$and``/``$or``): negation is
pushed down to the atoms, ``!=`` becomes "less or greater", and presence is posted
as explicit 0/1 fields. The semantics are those of
:func:`stream.decide.expressions.evaluate`, and a property test holds the two
together.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import threading
from collections.abc import Mapping
from typing import Any

import durable_rules_engine
import orjson

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
        self.numbers: dict[str, set[int | float]] = {}  # field -> numbers compared with

    def _number(self, field: str, value: int | float) -> None:
        self.numbers.setdefault(field, set()).add(value)

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
            self._number(field, value)  # type: ignore[arg-type]
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
        self._number(node.field, node.low)
        self._number(node.field, node.high)
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


#: Whole numbers up to this magnitude read the same as doubles in the engine.
_EXACT_INT = 2**53
#: Answers a matcher keeps; when full it starts afresh (classes are few in practice).
ANSWERS_KEPT = 4096
_TRUE = ("bool", True)
_FALSE = ("bool", False)


class RuleMatcher:
    """Match facts against a set of named conditions with durable-rules.

    ``remember``: keep the engine's answers by class of fact (see the module's doc);
    off, every fact goes to the engine (the benchmark's engine figure).
    """

    def __init__(self, conditions: Mapping[str, Node], *, remember: bool = True) -> None:
        compiler = _Compiler()
        self._ids = list(conditions)
        definition: dict[str, Any] = {}
        try:
            for index, rule_id in enumerate(self._ids):
                definition[f"r{index}"] = {"all": [{"m": compiler.compile(conditions[rule_id])}]}
        except _UnsupportedNumber as exc:
            raise RuleEngineError(_culprits(conditions), str(exc)) from None
        # A rule that always matches: with no match the engine raises, leaves no session
        # state, and deleting that state crashes it. With this, every fact is handled.
        definition["always"] = {"all": [{"m": {ALWAYS: 1}}]}
        #: engine action name -> index of the rule (the sentinel has none)
        self._index = {f"r{i}": i for i in range(len(self._ids))}
        #: per field read: (field, kinds compared with, the numbers compared with), sorted
        self._fields = tuple(
            (
                field,
                tuple(sorted(compiler.kinds.get(field, ()))),
                tuple(sorted(compiler.numbers.get(field, ()))),
            )
            for field in sorted(compiler.present | set(compiler.kinds))
        )
        self._remember = remember
        #: class of fact -> indexes of the rules the engine matched
        self._answers: dict[tuple[Any, ...], tuple[int, ...]] = {}
        self.answered = 0  # facts answered from what the engine said before
        self.name = f"goldenflow_{next(_names)}"
        with _lock:
            try:
                self._handle = durable_rules_engine.create_ruleset(
                    self.name, json.dumps(definition, ensure_ascii=False)
                )
            except durable_rules_engine.error as exc:
                raise RuleEngineError(_culprits(conditions), str(exc)) from None

    def prepare(self, fact: Mapping[str, Any]) -> dict[str, Any]:
        """The document posted to the engine: typed values and presence flags."""
        doc: dict[str, Any] = {ALWAYS: 1}
        for field, kinds, _ in self._fields:
            value = fact.get(field)
            kind = kind_of(value) if value is not None else "none"
            doc[_has_name(field)] = 1 if kind not in ("none", "other") else 0
            for wanted in kinds:
                same = kind == wanted
                doc[_is_name(field, wanted)] = 1 if same else 0
                if same:
                    doc[_value_name(field, wanted)] = _plain(value)
        return doc

    def fact_class(self, fact: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """What the engine's answer for ``fact`` depends on (None: not to be cached).

        One part per field read: None when missing, the kind when no condition
        compares the field with a value of that kind (only presence counts then),
        else the text, the boolean, or the number's interval among the numbers the
        conditions compare it with (2i between the i-th and the next, 2i+1 on the
        i-th). Text is the only ``str`` part, so parts of different kinds differ.
        """
        parts: list[Any] = []
        for field, kinds, numbers in self._fields:
            value = fact.get(field)
            if value is None:
                parts.append(None)
                continue
            kind = kind_of(value)
            if kind not in kinds:
                parts.append(("kind", kind))
            elif kind == "number":
                posted = _plain(value)
                if isinstance(posted, float):
                    if not math.isfinite(posted):
                        return None
                elif not -_EXACT_INT < posted < _EXACT_INT:
                    return None
                i = bisect.bisect_left(numbers, posted)
                parts.append(2 * i + 1 if i < len(numbers) and numbers[i] == posted else 2 * i)
            elif kind == "text":
                parts.append(value)
            elif kind == "bool":
                parts.append(_TRUE if value else _FALSE)
            else:  # a list or a mapping compared with: the engine reads it
                return None
        return tuple(parts)

    def match(self, fact: Mapping[str, Any]) -> list[str]:
        """Ids of the rules whose condition holds for ``fact``, in definition order."""
        key = self.fact_class(fact) if self._remember else None
        if key is not None:
            known = self._answers.get(key)
            if known is not None:
                self.answered += 1
                return [self._ids[i] for i in known]
        hits = self._ask_engine(fact)
        if key is not None:
            if len(self._answers) >= ANSWERS_KEPT:
                self._answers.clear()
            self._answers[key] = tuple(hits)
        return [self._ids[i] for i in hits]

    def _ask_engine(self, fact: Mapping[str, Any]) -> list[int]:
        """Indexes of the rules durable-rules matches for ``fact``, in definition order."""
        doc = self.prepare(fact)
        doc["sid"] = "0"
        # Posted values are text, whole numbers, booleans and floats without exponent
        # (see _plain): orjson writes them as the engine reads them; json takes the whole
        # numbers past 64 bits that orjson refuses.
        try:
            raw = orjson.dumps(doc).decode()
        except TypeError:
            raw = json.dumps(doc, ensure_ascii=False)
        engine, handle, index = durable_rules_engine, self._handle, self._index
        hits: set[int] = set()
        with _lock:
            code, state_handle = engine.assert_fact(handle, raw)[:2]
            if code in (1, 2):  # not handled, or seen: the sentinel rule rules both out
                raise RuleEngineError(self._ids, f"the engine answered {code} to a fact")
            if code == 3:  # as durable-rules' host reads it: no state handle
                state_handle = 0
            started = engine.start_action_for_state(handle, state_handle)
            if started:
                state, message = started[0], started[1]
                while message:
                    # {"<action name>":{...}}: the name is a rule key (r0, r1, ..., always)
                    action = message[2 : message.index('"', 2)]
                    if action in index:
                        hits.add(index[action])
                    engine.update_state(handle, state)
                    message = engine.complete_and_start_action(handle, state_handle)
            engine.delete_state(handle, "0")
        return sorted(hits)
