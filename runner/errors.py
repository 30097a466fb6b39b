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
        # Without a fix the message stands alone (it already says what to do, or a caller adds the fix).
        super().__init__(f"{what}\n  fix: {fix}" if fix else what)


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


class RecipeError(ConfigError):
    """An invalid image definition (images/*.yaml), located by file, line and key (exit 2)."""

    def __init__(self, path: Path, line: int | None, key: str, message: str) -> None:
        super().__init__(message, file=_display_path(path), line=line, key=key)
        self.path = path
        self.message = message


class UnknownImage(ConfigError, LookupError):
    """No such image definition or unsupported Debian arch name (exit 2)."""


class ImageUnavailable(InfraError):
    """An image cannot be had for that arch: offline, arch or package missing (exit 3).

    The message says what to do; `fix` is left to a caller that knows the command to suggest.
    """

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what, fix)


class BuildError(InfraError):
    """Building an image failed: unpacking, a missing expected path... (exit 3)."""

    def __init__(self, what: str, fix: str = "") -> None:
        super().__init__(what, fix)


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
