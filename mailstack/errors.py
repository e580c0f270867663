"""User-facing errors.

A ``UserError`` is something the person running mailstack can fix; the CLI prints its
message and exits 1. Any other exception is a bug in mailstack and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Sequence


class UserError(Exception):
    """An error caused by input or environment, reported without a traceback."""

    exit_code = 1


class SiteFileError(UserError):
    """The site file cannot be read at all (missing, a directory, not UTF-8)."""


class SiteValidationError(UserError):
    """The site file was read but is not a valid site description.

    ``problems`` holds one ``path (line N): message`` string per problem, all of them.
    """

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = list(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"{source}: {count} {noun}:"] + [f"  {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class StateError(UserError):
    """The state directory is unusable: unknown format, wrong permissions, damaged files."""


class OutputError(UserError):
    """The output directory cannot be written as planned."""
