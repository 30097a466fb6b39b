"""Runners for targets that are not Linux: windows under wine (wine.py), js/wasm and wasip1/wasm
under node (node.py).

Each cell runs in the same kind of bubblewrap sandbox as a Linux cell (no network, its own pid
namespace, --die-with-parent), so a timeout that kills bwrap takes every process of the cell with it:
wine's wineserver, services.exe and the program's children, or node and its threads (common.py).
Before either starts, the file is checked against what the runner executes (refusal()); what the
runners print when they cannot run a file is for classify.foreign.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ... import platforms, proc
from ...artifact import inspect
from ...binfmt import pe_machine, wasm_goos, wasm_imports
from ...errors import InfraError
from ...model import Evidence
from ...plan import Cell, RunSpec
from .common import BWRAP_FIX
from .node import NODE_FIX, run_node
from .wine import WINE_ARCHES, WINE_FIX, run_wine

EXPECTED_FORMAT: Mapping[str, str] = {"windows": "pe", "js": "wasm", "wasip1": "wasm"}
RUNNER_NAMES: Mapping[str, str] = {"windows": "wine", "js": "node + wasm_exec_node.js",
                                   "wasip1": "node WASI preview1"}


def run_foreign(cell: Cell, artifact: Path, run: RunSpec, tmp: Path) -> Evidence:
    """Run one windows, js or wasip1 cell; `tmp` is a scratch directory the caller owns and removes."""
    facts = inspect(artifact)
    goos = cell.target.os

    def mk(**kw: Any) -> Evidence:
        return Evidence(cell.id, "native", facts, **kw)

    if facts.format == "missing":
        return mk(ran=False, infra="the artifact is missing", infra_fix="see the build log")
    if goos not in EXPECTED_FORMAT:
        return mk(ran=False, infra=f"xarch has no runner for {goos} binaries",
                  infra_fix="the build and artifact checks still cover this target")
    if (why := refusal(goos, cell.target.arch, artifact, facts.format)) is not None:
        return mk(ran=False, path=f"static check before {RUNNER_NAMES[goos]}", refusal=why)
    if goos == "windows":
        if platforms.host_goarch() != "amd64":
            return mk(ran=False, infra=f"wine runs x86 Windows programs only on an x86-64 host, this one is "
                                       f"{platforms.host_goarch()}", infra_fix="run windows cells on an x86-64 machine")
        return run_wine(cell, artifact, run, tmp, facts, mk)
    return run_node(cell, artifact, run, tmp, facts, mk)


def refusal(goos: str, goarch: str, artifact: Path, fmt: str) -> str | None:
    """Why the runner would not execute this file as a goos program (None: it will run it)."""
    want = EXPECTED_FORMAT[goos]
    names = {"pe": "a PE (Windows) executable", "wasm": "a WebAssembly module"}
    if fmt != want:
        what = {"elf": "an ELF (Linux/Unix) executable", "macho": "a Mach-O (macOS) executable",
                "script": "a script (#!)", "pe": names["pe"], "wasm": names["wasm"]}.get(fmt, "not an executable")
        extra = (" (wine would start an ELF as a native Linux process, so xrun does not hand it one)"
                 if goos == "windows" and fmt == "elf" else "")
        return f"the artifact is {what}, not {names[want]}{extra}"
    if goos == "windows":
        machine = pe_machine(artifact)
        if machine not in WINE_ARCHES:
            return (f"the PE file is for machine {machine or 'unknown'}; wine on this x86-64 host runs only "
                    f"{' and '.join(WINE_ARCHES)} Windows programs, and so does an x86-64 Windows machine")
        return None
    got = wasm_goos(artifact)
    if got != goos:
        mods = ", ".join(sorted({m for m, _ in wasm_imports(artifact)})) or "nothing"
        return (f"the wasm module imports {mods}, so it is {'GOOS=' + got if got else 'not a Go ' + goos} "
                f"module; {RUNNER_NAMES[goos]} cannot provide those imports")
    return None


def missing_runner(cells: tuple[Cell, ...]) -> InfraError | None:
    """What preflight should refuse with (exit 3): wine or node absent while cells need them."""
    need = {c.target.os for c in cells if c.target.os in EXPECTED_FORMAT}
    try:
        if need:
            proc.which("bwrap", BWRAP_FIX)
        if "windows" in need:
            proc.which("wine", WINE_FIX)
        if need & {"js", "wasip1"}:
            proc.which("node", NODE_FIX)
    except InfraError as e:
        return e
    return None

