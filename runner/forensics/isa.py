"""`xrun explain --isa`: per function outside the Go standard library, the ISA extensions its code uses.

Facts, not a verdict: code may guard an AVX2 path with a CPU check. Extensions every binary of the
arch's oldest Go level may use (SSE2 on amd64, ...) are left out, so what is listed is what a CPU
model may lack. Functions come from .symtab (Go's linker writes it unless -s; cgo C functions too).
"""

from __future__ import annotations

import os

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from .. import platforms
from .decode import disassembler, extension_of

_STD = ("runtime.", "internal/", "sync", "syscall", "crypto/", "math", "strings.", "bytes.", "fmt.", "os.",
        "io.", "reflect.", "unicode", "strconv.", "sort.", "time.", "errors.", "vendor/", "slices.", "maps.",
        "iter.", "cmp.", "context.", "encoding/", "hash/", "net.", "net/", "path", "bufio.", "regexp", "log.",
        "compress/", "container/", "text/", "html/", "go.", "type:", "weak.", "unique.", "structs.")


# the standard library's assembly helpers that carry no package prefix in .symtab
_STD_ASM = frozenset({"countbody", "indexbytebody", "memeqbody", "cmpbody", "indexbody", "aeshashbody", "gogo",
                      "callRet", "setg_gcc", "debugCall32", "masks", "shifts"})


def _std(name: str) -> bool:
    if name in _STD_ASM or name.startswith(("gcWriteBarrier", "debugCall", "type:")):
        return True
    return name.startswith(_STD) or name in ("main.main", "main.init") or name.startswith(("_rt0", "_cgo_", "x_cgo",
                                                                                           "crosscall", "__"))


def function_extensions(path: str | os.PathLike[str], goarch: str, limit: int = 2000) -> dict[str, list[str]]:
    """{function: [extensions]} for the functions outside the standard library that use any."""
    md = disassembler(goarch)
    a = platforms.ARCHES.get(goarch)
    if md is None or a is None:
        return {}
    base = platforms.LEVEL_EXTENSIONS.get(goarch, {}).get(a.levels[0] if a.levels else "", frozenset())
    out: dict[str, list[str]] = {}
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            sec = elf.get_section_by_name(".symtab")
            if not isinstance(sec, SymbolTableSection):
                return {}
            loads = [s.header for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
            seen = 0
            for sym in sec.iter_symbols():
                e = sym.entry
                if e.st_info.type != "STT_FUNC" or not e.st_size or _std(sym.name):
                    continue
                seen += 1
                if seen > limit:
                    break
                h = next((h for h in loads if h.p_vaddr <= e.st_value < h.p_vaddr + h.p_filesz), None)
                if h is None:
                    continue
                f.seek(h.p_offset + e.st_value - h.p_vaddr)
                code = f.read(min(e.st_size, 1 << 16))
                exts: set[str] = set()
                for insn in md.disasm(code, e.st_value):
                    ext = extension_of(goarch, insn.mnemonic, [insn.group_name(g) or "" for g in insn.groups])
                    if ext and ext not in base and ext != "x87":
                        exts.add(ext)
                if exts:
                    out[sym.name.removesuffix(".abi0")] = sorted(exts)
    except (OSError, ELFError, ValueError):
        return out
    return dict(sorted(out.items()))
