"""Binary formats Go writes besides ELF (PE, Mach-O, wasm), read without running them.

Each reader is bounded and raises nothing for junk input; the Go build info reader (buildinfo.py)
walks PE and Mach-O containers with the same readers. ELF is pyelftools' (artifact.py).
"""

from __future__ import annotations

import os

from .macho import MACHO_CPUS, macho_arch, macho_arches
from .pe import PE_MACHINES, pe_machine
from .wasm import WASM_MODULES, go_minor, wasm_go_version, wasm_goos, wasm_imports

__all__ = ["MACHO_CPUS", "PE_MACHINES", "WASM_MODULES", "foreign_arch_mismatch", "go_minor", "macho_arch",
           "macho_arches", "pe_machine", "wasm_go_version", "wasm_goos", "wasm_imports"]


def foreign_arch_mismatch(path: str | os.PathLike[str], fmt: str, goos: str, goarch: str) -> str | None:
    """Why a PE / Mach-O / wasm file is not for goos/goarch (None: it is, or the format says nothing)."""
    if fmt == "pe":
        got = pe_machine(path)
        if got is not None and got != goarch:
            return f"the PE header says machine {got}, but target {goos}/{goarch} needs {goarch}"
    elif fmt == "macho":
        arches = macho_arches(path)
        if arches and goarch not in arches:
            kind = f"fat Mach-O with slices {', '.join(arches)}" if len(arches) > 1 else f"Mach-O {arches[0]}"
            return f"the file is a {kind}, but target {goos}/{goarch} needs {goarch}"
    elif fmt == "wasm":
        got_os = wasm_goos(path)
        if got_os is not None and got_os != goos:
            mods = ", ".join(sorted({m for m, _ in wasm_imports(path)}))
            return (f"the wasm module imports {mods}, which is GOOS={got_os}, but the target is "
                    f"{goos}/{goarch}")
    return None
