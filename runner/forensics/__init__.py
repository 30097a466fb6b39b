"""Evidence read from the binary and the fault after a cell ran: what faulted, where, and why.

Why a stage of its own: the verdict between `unsupported-cpu` (the binary's fault) and
`emulation-unsupported` (the emulator's) rests on the faulting instruction, not on the Go level in
the build info (Go assembly and cgo C code use what they like). The PC comes from Go's own
fatal-signal report, or from the guest core qemu wrote (the engines take it in a bounded private
directory and record (signal, pc)); the instruction, its extension, function and file:line are read
here from the artifact. This reads files and runs `go tool addr2line`, so it is not in classify,
which stays a pure function of the Evidence this returns.
"""

from __future__ import annotations

import re
import signal as _signal
from dataclasses import replace
from pathlib import Path

from .. import platforms
from ..model import Evidence, Fault
from ..plan import Cell
from . import libc
from .decode import decode, insn_size
from .symbols import code_at, origin_of, short_path, where

__all__ = ["FAULT_SIGNALS", "enrich", "go_report", "wants_core"]

FAULT_SIGNALS = {int(_signal.SIGILL): "SIGILL", int(_signal.SIGSEGV): "SIGSEGV", int(_signal.SIGBUS): "SIGBUS",
                 int(_signal.SIGFPE): "SIGFPE"}
_SIG = re.compile(r"^(SIGILL|SIGSEGV|SIGBUS|SIGFPE): [^\n]*\nPC=(0x[0-9a-f]+)", re.M)
_PANIC_SIG = re.compile(r"^\[signal (SIGILL|SIGSEGV|SIGBUS|SIGFPE)[^\]\n]*?pc=(0x[0-9a-f]+)\]", re.M)
_BYTES = re.compile(r"^instruction bytes:((?: 0x[0-9a-f]{1,2})+)", re.M)
_FRAME = re.compile(r"^goroutine \d+ [^\n]*\[running\]:\n(?P<func>[^\n]+)\n\t(?P<file>[^\n:]+):(?P<line>\d+)", re.M)


def go_report(stderr: str) -> tuple[str, int, bytes, str | None, str | None] | None:
    """(signal, pc, instruction bytes, function, file:line) from Go's fatal-signal report, if any.

    The function and file come from the trace only for a fatal signal (its first running frame is
    the faulting one); a panic's trace starts in the runtime's panic code, so those stay None.
    """
    m = _SIG.search(stderr)
    if m is not None:
        code = b""
        if b := _BYTES.search(stderr, m.end()):
            code = bytes(int(x, 16) for x in b.group(1).split())
        func = where_ = None
        if f := _FRAME.search(stderr, m.end()):
            func = f.group("func").split("(")[0].strip()
            where_ = f"{f.group('file')}:{f.group('line')}"
        return m.group(1), int(m.group(2), 16), code, func, where_
    if p := _PANIC_SIG.search(stderr):
        return p.group(1), int(p.group(2), 16), b"", None, None
    return None


def wants_core(ev: Evidence) -> bool:
    """Whether a cell died of a fault signal under qemu without Go saying where (a core would)."""
    return (ev.ran and ev.emulator is not None and ev.signal in FAULT_SIGNALS and ev.core is None
            and go_report(ev.stderr) is None)


def _fault(cell: Cell, ev: Evidence, artifact: Path) -> Fault | None:
    goarch = cell.target.facts.goarch
    rep = go_report(ev.stderr)
    if rep is not None:
        sig, pc, code, func, loc = rep
        source = "go-panic"
    elif ev.core is not None and ev.core[0] in FAULT_SIGNALS:
        sig, pc, code, func, loc = FAULT_SIGNALS[ev.core[0]], ev.core[1], b"", None, None
        source = "core-dump"
    else:
        return None
    if len(code) < insn_size(goarch):
        code = code_at(artifact, pc, insn_size(goarch)) or code
    insn, ext = decode(goarch, code, pc)
    if func is None:
        w = where(artifact, pc)
        func, loc, origin = w.symbol, w.location, w.origin
    else:
        loc = short_path(loc) if loc else None
        origin = origin_of(func, loc.rsplit(":", 1)[0] if loc else None)
    # what the CPU has on real hardware: a machine profile's own features, else the model's table
    have = cell.machine.features if cell.machine is not None else (
        platforms.model_extensions(goarch, cell.cpu) if cell.cpu else None)
    return Fault(signal=sig, pc=pc, source=source, instruction=insn, extension=ext, symbol=func, location=loc,
                 origin=origin, model=cell.cpu or None,
                 model_has_extension=None if ext is None or have is None else ext in have)


def _unbound(ev: Evidence, artifact: Path, root: Path | None) -> Evidence:
    """The symbols the loader could not bind and the image's C library, when the loader said so."""
    versions = tuple(dict.fromkeys(libc.GLIBC_VERSION_MISSING.findall(ev.stderr)))
    names = tuple(dict.fromkeys(libc.MUSL_SYMBOL_MISSING.findall(ev.stderr)))
    if not versions and not names:
        return ev
    syms: list[tuple[str, str | None]] = list(libc.needing(artifact, versions)) if versions else []
    if names:   # musl has no versions: name what glibc version the binary asked for each, if any
        asked = dict(libc.versioned_imports(artifact))
        syms += [(n, asked.get(n)) for n in names]
    return replace(ev, symbols=tuple(dict.fromkeys(syms)),
                   image_libc=libc.image_libc(root) if root is not None else None)


def enrich(cell: Cell, ev: Evidence, artifact: Path, root: Path | None = None) -> Evidence:
    """The evidence with what the binary and the image say about a failure added.

    A fault signal gets its instruction, extension and symbol; a loader that could not bind symbols
    gets the symbols and the image's C library (read from `root`, the image's root directory).
    """
    if not ev.ran or ev.infra or cell.target.os != "linux":
        return ev
    if ev.fault is None and (f := _fault(cell, ev, artifact)) is not None:
        ev = replace(ev, fault=f)
    return ev if ev.symbols else _unbound(ev, artifact, root)
