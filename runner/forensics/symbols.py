"""Where a PC is in the binary: the bytes there, its function, file:line, and whose code it is.

Go functions and file:line come from the binary's pclntab through `go tool addr2line` (the Go
toolchain xarch ships; it needs no DWARF, so -w binaries work, and -s ones too as long as pclntab is
there). A PC outside pclntab is C code (cgo, or a non-Go program): its function comes from .symtab /
.dynsym, its file:line from DWARF when the C code was compiled with -g (cgo's default CFLAGS).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from .. import paths, proc, toolchain
from ..errors import InfraError

_STD_PREFIXES = ("runtime.", "internal/", "runtime/", "sync/atomic.", "syscall.", "internal.")


@dataclass(frozen=True)
class Where:
    symbol: str | None
    location: str | None    # "runtime/runtime1.go:155", "add8_amd64.s:8", "avx2.c:6"
    origin: str             # go-runtime | go-user | go-asm | cgo-c | unknown


def code_at(path: str | os.PathLike[str], pc: int, size: int) -> bytes:
    """Up to `size` bytes of the file's loaded image at virtual address pc (b"" when not mapped)."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                h = seg.header
                if h.p_type == "PT_LOAD" and h.p_vaddr <= pc < h.p_vaddr + h.p_filesz:
                    f.seek(h.p_offset + pc - h.p_vaddr)
                    return f.read(min(size, h.p_vaddr + h.p_filesz - pc))
    except (OSError, ELFError, ValueError):
        pass
    return b""


def _goroot_src() -> str:
    try:
        return str(Path(toolchain.go_bin_dir()).parent / "src") + "/"
    except InfraError:
        return "\0"


def short_path(file: str) -> str:
    """GOROOT's files as the import path Go prints with -trimpath (runtime/runtime1.go)."""
    root = _goroot_src()
    return file[len(root):] if file.startswith(root) else file


def origin_of(symbol: str | None, file: str | None, in_pclntab: bool = True) -> str:
    """Whose code a function is, from its name and file."""
    if not in_pclntab or (file or "").endswith((".c", ".h", ".cc", ".cpp", ".S")) \
            or (symbol or "").startswith(("_cgo", "x_cgo")):
        return "cgo-c" if symbol or file else "unknown"
    if file is None and symbol is None:
        return "unknown"
    std = (symbol or "").startswith(_STD_PREFIXES)
    if (file or "").endswith(".s"):
        return "go-runtime" if std else "go-asm"
    return "go-runtime" if std else "go-user"


@functools.lru_cache(maxsize=64)
def _addr2line(path: str, mtime_ns: int, pc: int) -> tuple[str, str] | None:
    go = os.path.join(toolchain.go_bin_dir(), "go")
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "", "GOPROXY": "off"}
    # the first use builds the tool into the Go build cache (~15 s once), then it takes ~0.1 s
    r = proc.run([go, "tool", "addr2line", path], stdin=f"{pc:#x}\n", env=env, timeout=180)
    lines = r.stdout.splitlines()
    if r.returncode != 0:       # the tool failed (not "no such PC"): where() does not remember that
        raise InfraError(f"go tool addr2line failed: {r.stderr.strip()[:200]}", toolchain.GO_FIX)
    if len(lines) < 2 or lines[0].strip() in ("", "?"):
        return None
    return lines[0].strip(), lines[1].strip()


def _elf_symbol(path: str, pc: int) -> tuple[str | None, bool]:
    """(function symbol containing pc, whether the binary has a Go pclntab)."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            go = elf.get_section_by_name(".gopclntab") is not None or elf.get_section_by_name(".go.buildinfo") is not None
            for name in (".symtab", ".dynsym"):
                sec = elf.get_section_by_name(name)
                if not isinstance(sec, SymbolTableSection):
                    continue
                best = None
                for sym in sec.iter_symbols():
                    e = sym.entry
                    if e.st_info.type != "STT_FUNC" or not e.st_value:
                        continue
                    if e.st_value <= pc < e.st_value + max(e.st_size, 1):
                        best = sym.name
                        break
                if best:
                    return best, go
            return None, go
    except (OSError, ELFError, ValueError):
        return None, False


def _dwarf_line(path: str, pc: int) -> str | None:
    """file:line of pc from DWARF line tables (C code compiled with -g); bounded to the CU holding pc."""
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if not elf.has_dwarf_info():
                return None
            dwarf = elf.get_dwarf_info()
            aranges = dwarf.get_aranges()
            offsets = [aranges.cu_offset_at_addr(pc)] if aranges else None
            cus = ([dwarf.get_CU_at(o) for o in offsets if o is not None] if offsets
                   else list(dwarf.iter_CUs())[:4000])
            for cu in cus:
                lp = dwarf.line_program_for_CU(cu)
                if lp is None:
                    continue
                prev = None
                for entry in lp.get_entries():
                    st = entry.state
                    if st is None:
                        continue
                    if prev is not None and prev.address <= pc < st.address:
                        fe = lp["file_entry"][prev.file - 1 if lp.header.version < 5 else prev.file]
                        name = fe.name.decode() if isinstance(fe.name, bytes) else str(fe.name)
                        return f"{name}:{prev.line}"
                    prev = None if st.end_sequence else st
    except (OSError, ELFError, ValueError, IndexError, KeyError, AttributeError):
        return None
    return None


def where(path: str | os.PathLike[str], pc: int) -> Where:
    """The function, file:line and origin of pc in the binary at path: remembered across runs while
    the binary is the same file (a warm matrix's faulting cell asks again; `go tool addr2line` and
    the symbol table scan cost ~0.1 s)."""
    p = str(path)
    try:
        os.stat(p)
    except OSError:
        return Where(None, None, "unknown")

    def compute() -> list[object]:
        w, complete = _where(p, pc)
        return [w.symbol, w.location, w.origin, complete]

    got = paths.remembered("where", [p], f"{pc:#x} {_goroot_src()}", compute, keep=lambda v: bool(v[3]))
    return Where(got[0], got[1], got[2])  # type: ignore[arg-type]


def _where(p: str, pc: int) -> tuple[Where, bool]:
    """where() computed, and whether it is complete (False when the Go toolchain could not be asked)."""
    symbol, is_go = _elf_symbol(p, pc)
    hit = None
    complete = True
    if is_go:
        try:
            hit = _addr2line(p, os.stat(p).st_mtime_ns, pc)
        except (InfraError, OSError):
            hit, complete = None, False
    if hit is not None:
        func, fileline = hit
        file = fileline.rsplit(":", 1)[0]
        return Where(func, short_path(fileline), origin_of(func, file)), complete
    loc = _dwarf_line(p, pc) if symbol else None
    if not complete:        # pclntab could not be asked: the names say whose code it is
        return Where(symbol, loc, origin_of(symbol, loc.rsplit(":", 1)[0] if loc else None)), False
    # a Go binary's PC outside pclntab is C linked through cgo; a program not built by Go is "native"
    return Where(symbol, loc, ("cgo-c" if is_go else "native") if symbol else "unknown"), complete
