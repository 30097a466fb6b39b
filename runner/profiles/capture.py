"""`xrun profile capture`: the machine's /proc/cpuinfo as a file a matrix profile names.

Standard library only, so it runs wherever Python does; on a machine without xrun, `cat /proc/cpuinfo
> NAME.cpuinfo` captures the same (xrun reads the first CPU and ignores the rest).
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["capture", "first_cpu"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def first_cpu(text: str) -> str:
    """The first processor's block and the machine-wide lines (arm's Hardware, s390x's header)."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    if not blocks:
        return ""
    cpu_blocks = [b for b in blocks if re.match(r"(?i)processor\s*:", b)]
    keep = [blocks[0]] + [b for b in blocks[1:] if b not in cpu_blocks]
    return "\n\n".join(keep) + "\n"


def capture(name: str, out: Path | None, source: Path = Path("/proc/cpuinfo")) -> tuple[Path, str]:
    """Write the capture; return where, and the profile entry to paste."""
    if not _NAME.match(name):
        raise ValueError(f"profile name {name!r}: letters, digits, '.', '_' and '-' only")
    dest = out if out is not None else Path(f"{name}.cpuinfo")
    if dest.is_dir() or not dest.suffix:     # a directory (made if need be): NAME.cpuinfo in it
        dest = dest / f"{name}.cpuinfo"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(first_cpu(source.read_text(errors="replace")))
    return dest, f"  - {{name: {name}, cpuinfo: {dest.as_posix()}}}"
