"""One error hierarchy for goldenflow.

Every message says what is wrong, what was received and how to fix it, so the
person reading a log line or a dead-letter record can act on it without reading
the code.
"""

from __future__ import annotations


class GoldenflowError(Exception):
    """Base class of every error goldenflow raises on purpose."""


class ConfigError(GoldenflowError):
    """A setting is missing or has a value goldenflow cannot use."""


class RuleFileError(GoldenflowError):
    """A rule file is unreadable or invalid; carries every problem as file:line."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RuleProblem:
    """One problem in one rule file, located at a line."""

    __slots__ = ("line", "message", "path")

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"

    def __repr__(self) -> str:
        return f"RuleProblem({self.path!r}, {self.line}, {self.message!r})"


class InvalidEvent(GoldenflowError):
    """An input message that cannot be processed; it goes to the dead-letter topic.

    ``code`` is a short stable token (``not_json``, ``missing_field``, ...) for
    counting; ``reason`` is the sentence a person reads.
    """

    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


class BrokerError(GoldenflowError):
    """The embedded broker could not be started or did not answer."""
