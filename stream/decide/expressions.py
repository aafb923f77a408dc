"""The condition language of rule files: small, safe, explainable.

A ``when:`` condition is parsed here into a tree of plain nodes. There are
comparisons (``== != < <= > >=``), ``in [...]`` / ``not in [...]``,
``between A and B``, ``exists field``, ``and`` / ``or`` / ``not`` and
parentheses, over fact fields and literal values (numbers, 'text' or "text",
true, false, null). Nothing else: no function calls, no attribute access, no
indexing, nothing is ever evaluated as Python. Every error carries the column it
was found at, so the rule checker can point at ``file:line:column``.

Semantics: a comparison with a field the fact does not have (or holds null, or a
value of another kind than the literal: text, number, true/false) is false, and so
is its negation written as a comparison (``x != 1``); use ``exists x`` /
``not exists x`` to test presence. ``not (...)`` is true exactly when the inner
condition is false.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from stream.errors import GoldenflowError

Literal = str | int | float | bool | None

#: Numbers a condition may use: 0, or a magnitude in [SMALLEST_NUMBER, LARGEST_NUMBER).
#: (The rules engine reads no exponent notation; see stream/decide/matcher.py.)
SMALLEST_NUMBER = 0.001
LARGEST_NUMBER = 1e15
MAX_LENGTH = 4_000
MAX_DEPTH = 32
KEYWORDS = {"and", "or", "not", "in", "between", "exists", "true", "false", "null"}
OPERATORS = ("==", "!=", "<=", ">=", "<", ">")

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[()\[\],])
  | (?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)


class ExpressionError(GoldenflowError):
    """A condition that cannot be parsed; ``column`` is 1-based within the text."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}")


# -- the tree --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Const:
    value: bool


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: str
    value: Literal


@dataclass(frozen=True, slots=True)
class In:
    field: str
    values: tuple[Literal, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Between:
    field: str
    low: int | float
    high: int | float


@dataclass(frozen=True, slots=True)
class Exists:
    field: str


@dataclass(frozen=True, slots=True)
class Not:
    inner: Node


@dataclass(frozen=True, slots=True)
class And:
    parts: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    parts: tuple[Node, ...]


Node = Const | Compare | In | Between | Exists | Not | And | Or


# -- parsing -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tok:
    kind: str
    text: str
    column: int


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup or "bad"
        column = match.start() + 1
        value = match.group()
        if kind == "space":
            continue
        if kind == "bad":
            hint = ""
            if value == ".":
                hint = " (attribute access is not allowed; fields are plain names)"
            elif value in "+-*/%":
                hint = " (arithmetic is not allowed)"
            raise ExpressionError(f"unexpected character {value!r}{hint}", column)
        out.append(_Tok(kind, value, column))
    out.append(_Tok("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def is_word(self, word: str) -> bool:
        return self.tok.kind == "name" and self.tok.text == word

    def expect(self, kind: str, text: str | None = None) -> _Tok:
        tok = self.tok
        if tok.kind != kind or (text is not None and tok.text != text):
            wanted = text or kind
            got = tok.text or "the end of the condition"
            raise ExpressionError(f"expected {wanted!r}, found {got!r}", tok.column)
        return self.take()

    def parse(self) -> Node:
        node = self.or_expr()
        if self.tok.kind != "end":
            raise ExpressionError(f"unexpected {self.tok.text!r}", self.tok.column)
        return node

    def or_expr(self) -> Node:
        parts = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else Or(tuple(parts))

    def and_expr(self) -> Node:
        parts = [self.not_expr()]
        while self.is_word("and"):
            self.take()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else And(tuple(parts))

    def not_expr(self) -> Node:
        if self.is_word("not"):
            self.take()
            return Not(self.nested(self.not_expr))
        return self.atom()

    def nested(self, parse: Any) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExpressionError(f"nested more than {MAX_DEPTH} levels deep", self.tok.column)
        try:
            node: Node = parse()
            return node
        finally:
            self.depth -= 1

    def atom(self) -> Node:
        tok = self.tok
        if tok.kind == "punct" and tok.text == "(":
            self.take()
            node = self.nested(self.or_expr)
            self.expect("punct", ")")
            return node
        if self.is_word("true") or self.is_word("false"):
            self.take()
            return Const(tok.text == "true")
        if self.is_word("exists"):
            self.take()
            return Exists(self.field())
        field = self.field()
        return self.predicate(field)

    def field(self) -> str:
        tok = self.tok
        if tok.kind != "name" or tok.text in KEYWORDS:
            got = tok.text or "the end of the condition"
            raise ExpressionError(f"expected a field name, found {got!r}", tok.column)
        self.take()
        nxt = self.tok
        if nxt.kind == "punct" and nxt.text == "(":
            raise ExpressionError(f"function calls are not allowed ({tok.text}(...))", tok.column)
        if nxt.kind == "punct" and nxt.text == "[":
            raise ExpressionError("indexing is not allowed; fields are plain names", nxt.column)
        return tok.text

    def predicate(self, field: str) -> Node:
        tok = self.tok
        if tok.kind == "op":
            self.take()
            value = self.literal()
            if (
                tok.text in ("<", "<=", ">", ">=")
                and not _is_number(value)
                and not isinstance(value, str)
            ):
                raise ExpressionError(
                    f"{tok.text} needs a number or text, not {value!r}", tok.column
                )
            return Compare(field, tok.text, value)
        negated = False
        if self.is_word("not"):
            self.take()
            negated = True
            if not self.is_word("in"):
                raise ExpressionError("expected 'in' after 'not'", self.tok.column)
        if self.is_word("in"):
            self.take()
            return In(field, self.literal_list(), negated)
        if self.is_word("between"):
            self.take()
            low = self.number()
            self.expect("name", "and")
            high = self.number()
            if low > high:
                raise ExpressionError(
                    f"between {low} and {high}: the low end is above the high", tok.column
                )
            return Between(field, low, high)
        got = tok.text or "the end of the condition"
        raise ExpressionError(
            f"expected a comparison after {field!r} (==, !=, <, <=, >, >=, in, between), "
            f"found {got!r}",
            tok.column,
        )

    def literal_list(self) -> tuple[Literal, ...]:
        self.expect("punct", "[")
        values = [self.literal()]
        while self.tok.kind == "punct" and self.tok.text == ",":
            self.take()
            values.append(self.literal())
        self.expect("punct", "]")
        return tuple(values)

    def number(self) -> int | float:
        tok = self.tok
        value = self.literal()
        if not _is_number(value):
            raise ExpressionError(f"expected a number, found {tok.text!r}", tok.column)
        return value  # type: ignore[return-value]

    def literal(self) -> Literal:
        tok = self.take()
        if tok.kind == "number":
            value = float(tok.text) if "." in tok.text else int(tok.text)
            if not number_in_range(value):
                raise ExpressionError(
                    f"number {tok.text} is out of range; use 0 or a size from "
                    f"{SMALLEST_NUMBER} to below 10^15",
                    tok.column,
                )
            return value
        if tok.kind == "string":
            return _unquote(tok.text)
        if tok.kind == "name" and tok.text in ("true", "false"):
            return tok.text == "true"
        if tok.kind == "name" and tok.text == "null":
            return None
        got = tok.text or "the end of the condition"
        hint = (
            " (compare a field with a value, not with another field)" if tok.kind == "name" else ""
        )
        raise ExpressionError(f"expected a value, found {got!r}{hint}", tok.column)


def number_in_range(value: float) -> bool:
    return value == 0 or SMALLEST_NUMBER <= abs(value) < LARGEST_NUMBER


def _unquote(text: str) -> str:
    body = text[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse(text: str) -> Node:
    """Parse a condition; raise :class:`ExpressionError` with the column of the problem."""
    if not isinstance(text, str):
        raise ExpressionError("a condition must be text", 1)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"condition is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    if not text.strip():
        raise ExpressionError("empty condition; write true to match every fact", 1)
    return _Parser(text).parse()


# -- reading the tree -----------------------------------------------------------------------


def fields(node: Node) -> list[str]:
    """The fact fields a condition reads, in order of first use."""
    out: list[str] = []

    def walk(n: Node) -> None:
        if isinstance(n, Compare | In | Between | Exists):
            if n.field not in out:
                out.append(n.field)
        elif isinstance(n, Not):
            walk(n.inner)
        elif isinstance(n, And | Or):
            for part in n.parts:
                walk(part)

    walk(node)
    return out


def evaluate(node: Node, fact: dict[str, Any]) -> bool:
    """Evaluate a condition against a fact (the reference semantics, pure Python)."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, And):
        return all(evaluate(p, fact) for p in node.parts)
    if isinstance(node, Or):
        return any(evaluate(p, fact) for p in node.parts)
    if isinstance(node, Not):
        return not evaluate(node.inner, fact)
    if isinstance(node, Exists):
        return fact.get(node.field) is not None
    value = fact.get(node.field)
    if value is None:
        return False
    if isinstance(node, In):
        same_kind = [v for v in node.values if kind_of(v) == kind_of(value)]
        if not same_kind:
            return False  # a value of another kind counts as missing
        return (value in same_kind) != node.negated
    if isinstance(node, Between):
        return _is_number(value) and node.low <= value <= node.high
    return _compare(value, node.op, node.value)


def kind_of(value: object) -> str:
    """``bool``, ``number``, ``text`` or ``other``: comparisons only hold within a kind."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    return "other"


def _compare(left: Any, op: str, right: Literal) -> bool:
    if kind_of(left) != kind_of(right):
        return False  # a value of another kind counts as missing, for != too
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)
