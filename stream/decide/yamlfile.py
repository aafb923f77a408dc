"""Read a YAML file into plain data and remember the line of every key and item.

Rule authors need problems reported as ``file:line``. PyYAML's node tree knows
where everything is; this keeps a map from a data path (``("rules", 2, "when")``)
to its 1-based line, and reports duplicate keys that plain loading would hide.
Only the safe loader is used: no tags that construct Python objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from stream.errors import RuleFileError, RuleProblem

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class YamlDoc:
    """Loaded data plus the line of each path in it."""

    def __init__(self, path: str, data: Any, lines: dict[Loc, int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, loc: Loc) -> int:
        """The line of the deepest known prefix of ``loc`` (1 if none)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1

    def problem(self, loc: Loc, message: str) -> RuleProblem:
        return RuleProblem(self.path, self.line_of(loc), message)


def load_yaml(path: Path, shown_as: str | None = None) -> YamlDoc:
    """Load one YAML file; raise :class:`RuleFileError` naming file and line."""
    name = shown_as or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleFileError([RuleProblem(name, 1, f"cannot read the file: {exc}")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str) -> YamlDoc:
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        raise RuleFileError(
            [
                RuleProblem(
                    name,
                    line,
                    f"not valid YAML text: character {exc.character!r} "
                    "is not allowed; save the file as plain UTF-8 text",
                )
            ]
        ) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return YamlDoc(name, None, {(): 1})
        walker = _Walker(name)
        walker.walk(node, ())
        if walker.problems:
            raise RuleFileError(walker.problems)
        lines = walker.lines
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = " ".join(x for x in (exc.context, exc.problem) if x) or "invalid YAML"
        raise RuleFileError([RuleProblem(name, line, f"YAML syntax error: {what}")]) from None
    except yaml.YAMLError as exc:
        raise RuleFileError([RuleProblem(name, 1, f"YAML error: {exc}")]) from None
    except RecursionError:  # the YAML parser recurses once per level of nesting
        raise RuleFileError(
            [RuleProblem(name, 1, "the YAML is nested too deeply (hundreds of levels)")]
        ) from None
    finally:
        loader.dispose()
    return YamlDoc(name, data, lines)


#: Nodes a rule file may expand to, aliases counted at every use. The shipped files
#: have a few hundred; a "billion laughs" file of a kilobyte would have billions.
MAX_NODES = 100_000


class _Walker:
    """Records the line of every path, finds duplicate keys, and refuses files whose
    aliases expand past :data:`MAX_NODES` before anything expands them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: dict[Loc, int] = {}
        self.problems: list[RuleProblem] = []
        self.nodes = 0

    def walk(self, node: yaml.Node, loc: Loc) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise RuleFileError(
                [
                    RuleProblem(
                        self.name,
                        node.start_mark.line + 1,
                        f"the file expands to more than {MAX_NODES:,} YAML values "
                        "(aliases of aliases?); write the values out or use fewer aliases",
                    )
                ]
            )
        self.lines[loc] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in seen:
                    self.problems.append(
                        RuleProblem(
                            self.name, line, f"duplicate key {key!r} (first at line {seen[key]})"
                        )
                    )
                seen[key] = line
                self.lines[(*loc, key)] = line
                self.walk(value_node, (*loc, key))
                self.lines[(*loc, key)] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.walk(item, (*loc, i))


def load_model(
    path: Path, model: type[M], problems: list[RuleProblem]
) -> tuple[M | None, YamlDoc | None]:
    """Load a YAML file and validate it; problems are appended as file:line, never raised."""
    if not path.is_file():
        problems.append(RuleProblem(str(path), 1, f"missing rule file {path.name}"))
        return None, None
    try:
        doc = load_yaml(path)
    except RuleFileError as exc:
        problems.extend(exc.problems)
        return None, None
    try:
        return model.model_validate(doc.data), doc
    except ValidationError as exc:
        problems.extend(validation_problems(doc, exc))
        return None, doc


def validation_problems(doc: YamlDoc, exc: ValidationError, prefix: Loc = ()) -> list[RuleProblem]:
    """Schema errors as file:line problems; ``prefix`` locates a part parsed on its own."""
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            message = "unknown field; check the spelling against rules/README.md"
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "literal_error":
            message = f"{err['msg']}; got {err.get('input')!r}"
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
        out.append(doc.problem((*prefix, *err["loc"]), f"{where}: {message}"))
    return out
