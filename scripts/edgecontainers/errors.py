"""The one error hierarchy of the package.

Library code raises these; only :mod:`edgecontainers.cli` turns them into exit
codes and one-line messages.  Nothing below the CLI calls ``sys.exit``.
"""

from __future__ import annotations

# Exit codes, decided here and nowhere else.
EXIT_OK = 0
EXIT_FAILED = 1  # the job ran and failed (a build broke, a check refused, ...)
EXIT_USAGE = 2  # bad command line, bad configuration, missing prerequisite


class EdgeError(Exception):
    """Base class of every error the user should see as one line."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(EdgeError):
    """Bad input: unknown machine, option, missing file, invalid value."""

    exit_code = EXIT_USAGE


class ConfigError(UsageError):
    """The configuration (kas files, keys, environment) is not usable."""


class ToolMissingError(ConfigError):
    """An external program we drive through its command line is not installed."""

    def __init__(self, tool: str, *, hint: str | None = None) -> None:
        super().__init__(f"'{tool}' is not installed or not on PATH", hint=hint)
        self.tool = tool


class CommandFailed(EdgeError):
    """An external command exited non-zero."""

    def __init__(self, cmd: list[str] | str, returncode: int, *, output: str = "", hint: str | None = None):
        shown = cmd if isinstance(cmd, str) else " ".join(cmd)
        tail = ""
        if output.strip():
            tail = ": " + output.strip().splitlines()[-1][:300]
        super().__init__(f"'{shown}' failed with exit code {returncode}{tail}", hint=hint)
        self.cmd = cmd
        self.returncode = returncode
        self.output = output


class Refused(EdgeError):
    """A safety check refused to go on (flashing the wrong disk, overwriting keys, ...)."""


class Interrupted(EdgeError):
    """The user interrupted the command."""

    exit_code = 130
