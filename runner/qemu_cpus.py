"""The CPU models a qemu-user emulator accepts (`qemu-<arch>-static -cpu help`), to check a matrix at load.

A typo in a profile (`cpu: {arm: cortex-z99}`) would otherwise build every target and end each cell as
emulation-unsupported. The list is asked once per emulator binary and kept in the cache, keyed by the
binary's path, size and mtime, so an upgraded qemu is asked again.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import re
import shutil

from . import paths, platforms, proc
from .engines import emulator

_CACHE = "qemu-cpus.json"
_QUOTED = re.compile(r"^MIPS '([^']+)'")
_PREFIXED = re.compile(r"^(?:x86|PowerPC|s390|Sparc|sparc)\s+(\S+)")
ALWAYS = ("max", "host")        # accepted by every qemu-user (host only under KVM, never here)


def _parse(text: str) -> frozenset[str]:
    names: set[str] = set()
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.endswith(":"):
            if line.startswith("Recognized"):       # x86 then lists CPUID flags, not models
                break
            continue
        m = _QUOTED.match(line) or _PREFIXED.match(line)
        if m:
            names.add(m.group(1).lower())
        elif " " not in line:
            names.add(line.lower())
    return frozenset(names)


def models(goarch: str) -> frozenset[str] | None:
    """The models qemu for goarch accepts (lower case), or None when it is not installed or cannot say."""
    q = platforms.arch(goarch).qemu
    exe = shutil.which(f"qemu-{q}-static") if q else None
    if exe is None:
        return None
    real = os.path.realpath(exe)
    try:
        st = os.stat(real)
    except OSError:
        return None
    key = f"{real}|{st.st_size}|{st.st_mtime_ns}"
    cache = paths.cache_dir() / _CACHE
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), list):
        return frozenset(known[key])
    try:
        emulator.verify(real)      # never run a modified emulator, not even for its help
        r = proc.run([real, "-cpu", "help"], timeout=20)
    except Exception:
        return None
    found = _parse(r.stdout + r.stderr)
    if not found or r.timed_out or r.signal is not None:     # it exits 1 after the list (qemu 7.2)
        return None
    known = {k: v for k, v in (known if isinstance(known, dict) else {}).items() if not k.startswith(real + "|")}
    known[key] = sorted(found)
    with contextlib.suppress(OSError):
        paths.write_text_atomic(cache, json.dumps(known))
    return found


def accepted(model: str, names: frozenset[str]) -> bool:
    """Whether qemu takes `model` (its features after ',' aside; "-<arch>-cpu" suffixes are optional)."""
    m = model.split(",")[0].strip().lower()
    return m in names or m in ALWAYS or any(n.startswith(m + "-") and n.endswith("-cpu") for n in names)


def closest(model: str, names: frozenset[str], n: int = 3) -> list[str]:
    return difflib.get_close_matches(model.split(",")[0].lower(), sorted(names), n=n, cutoff=0.5)
