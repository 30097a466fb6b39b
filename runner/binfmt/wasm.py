"""WebAssembly modules: their imports (which say js or wasip1) and the Go release that built them."""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping

from .io import BUILDINFO_MAGIC, uvarint

# The host modules a Go wasm module imports, and the GOOS each means.
WASM_MODULES: Mapping[str, str] = {"gojs": "js", "go": "js", "wasi_snapshot_preview1": "wasip1"}

_GO_VERSION = re.compile(rb"go1\.\d+(?:\.\d+)?(?:(?:rc|beta)\d+)?")


def wasm_imports(path: str | os.PathLike[str]) -> tuple[tuple[str, str], ...]:
    """(module, name) of every import of a wasm module; () when it is not wasm or has none."""
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError:
        return ()
    if not data.startswith(b"\0asm"):
        return ()
    out: list[tuple[str, str]] = []
    pos = 8
    try:
        while pos < len(data):
            sid = data[pos]
            size, pos = uvarint(data, pos + 1)
            end = pos + size
            if sid == 2:
                count, p = uvarint(data, pos)
                for _ in range(count):
                    n, p = uvarint(data, p)
                    mod = data[p:p + n].decode("utf-8", "replace")
                    p += n
                    n, p = uvarint(data, p)
                    name = data[p:p + n].decode("utf-8", "replace")
                    p += n
                    kind = data[p]
                    p += 1
                    if kind == 0:                   # func: type index
                        _, p = uvarint(data, p)
                    elif kind in (1, 2):            # table (reftype + limits) or memory (limits)
                        p += kind == 1
                        flags = data[p]
                        _, p = uvarint(data, p + 1)
                        if flags & 1:
                            _, p = uvarint(data, p)
                    else:                           # global: valtype, mutability
                        p += 2
                    out.append((mod, name))
                return tuple(out)
            if sid > 2 and sid != 0:                # sections are ordered: no import section follows
                break
            pos = end
    except (ValueError, IndexError):
        pass
    return tuple(out)


def wasm_goos(path: str | os.PathLike[str]) -> str | None:
    """js or wasip1, from the host modules a Go wasm module imports (None: neither)."""
    mods = {m for m, _ in wasm_imports(path)}
    found = {WASM_MODULES[m] for m in mods if m in WASM_MODULES}
    return found.pop() if len(found) == 1 else None


def wasm_go_version(path: str | os.PathLike[str]) -> str | None:
    """The Go release that built a .wasm: its build info, else the commonest go1.N[.M] string in it.

    Go writes runtime.buildVersion and the build info blob into the data section; the blob's inline
    form (Go 1.18+) is the magic, a 32-byte header, then a varint-prefixed version string.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(64 << 20)
    except OSError:
        return None
    i = data.find(BUILDINFO_MAGIC)
    if i >= 0 and i + 33 <= len(data) and data[i + 15] & 0x2:
        try:
            n, p = uvarint(data, i + 32)
            vers = data[p:p + n].decode("ascii")
            if vers.startswith("go"):
                return vers
        except (ValueError, UnicodeDecodeError):
            pass
    found = Counter(_GO_VERSION.findall(data))
    return found.most_common(1)[0][0].decode() if found else None


def go_minor(version: str | None) -> str | None:
    """go1.27.3 -> go1.27: the release whose wasm_exec.js matches (patch releases keep its imports)."""
    m = re.match(r"go1\.\d+", version or "")
    return m.group(0) if m else None
