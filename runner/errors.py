"""One error hierarchy; each class maps to a distinct exit code (contract §5). Only main() exits."""

from __future__ import annotations

import os
from pathlib import Path


class XarchError(Exception):
    """Base class: an error xrun reports as one message, without a traceback."""

    exit_code = 1


class ConfigError(XarchError):
    """The matrix or the command line is invalid (exit 2). Names file:line and the key."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.file = file
        self.line = line
        self.key = key
        self.detail = message
        where = ""
        if file is not None:
            where = f"{file}:{line}: " if line is not None else f"{file}: "
        keypart = f"{key}: " if key else ""
        super().__init__(f"{where}{keypart}{message}")


class InfraError(XarchError):
    """Something xrun needs is missing or down (exit 3). Says what to install or start."""

    exit_code = 3

    def __init__(self, what: str, fix: str) -> None:
        self.what = what
        self.fix = fix
        super().__init__(f"{what}\n  fix: {fix}")


class Interrupted(XarchError):
    """Ctrl-C: everything was cleaned up (exit 130)."""

    exit_code = 130


def read_text(path: str | os.PathLike[str], *, missing: str = "no such file") -> str:
    """A UTF-8 file's text, or ConfigError (exit 2) naming the file: `missing` when it is not there,
    else "cannot read: ..." (a directory, no permission, not UTF-8)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(missing, file=str(path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read: {e}", file=str(path)) from None
