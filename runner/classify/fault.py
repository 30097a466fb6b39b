"""What faulted, read from the Go runtime's own fatal-signal report: the PC, the instruction, its ISA
extension, the function and file:line, and whose code it is (the Go runtime, user Go code, Go
assembly, or C via cgo).

Why: the Go level in the build info says which instructions the *compiler* may emit; it says
nothing about Go assembly or C code, which may use AVX2 on a v1 binary. The faulting instruction
is the evidence that decides whether the binary (it needs an extension the CPU model lacks) or the
emulator is at fault. capstone decodes the bytes Go prints after `instruction bytes:`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

_SIG = re.compile(r"^SIG(ILL|SEGV|BUS|FPE): [^\n]*\nPC=(0x[0-9a-f]+)", re.M)
_BYTES = re.compile(r"^instruction bytes:((?: 0x[0-9a-f]{1,2})+)", re.M)
_FRAME = re.compile(r"^goroutine \d+ [^\n]*\[running\]:\n(?P<func>[^\n]+)\n\t(?P<file>[^\n:]+):(?P<line>\d+)", re.M)

# capstone (arch, mode) per GOARCH; the extensions are capstone's instruction group names
_CS: dict[str, tuple[str, str]] = {
    "amd64": ("CS_ARCH_X86", "CS_MODE_64"), "386": ("CS_ARCH_X86", "CS_MODE_32"),
    "arm64": ("CS_ARCH_ARM64", "CS_MODE_ARM"), "arm": ("CS_ARCH_ARM", "CS_MODE_ARM"),
}
# capstone group name -> the extension a CPU must have (the ones Go assembly and C code commonly use)
EXTENSIONS = {"avx": "AVX", "avx2": "AVX2", "fma": "FMA", "bmi": "BMI1", "bmi2": "BMI2", "avx512": "AVX-512F",
              "sse41": "SSE4.1", "sse42": "SSE4.2", "ssse3": "SSSE3", "aes": "AES-NI", "sha": "SHA",
              "adx": "ADX", "f16c": "F16C", "vfp3": "VFPv3", "vfp4": "VFPv4", "neon": "NEON",
              "v7": "ARMv7", "v8": "ARMv8", "crc": "CRC32", "crypto": "ARMv8 crypto"}


@dataclass(frozen=True, kw_only=True)
class Fault:
    signal: str                     # ILL, SEGV, BUS, FPE
    pc: int
    instruction: str | None = None  # "vpxor ymm0, ymm0, ymm0"
    extension: str | None = None    # "AVX2"
    function: str | None = None     # "main.useAVX"
    where: str | None = None        # "/src/avx_amd64.s:4"
    origin: str = "unknown"         # go-runtime | go | go-assembly | cgo | unknown

    def describe(self) -> str:
        what = f"'{self.instruction}'" if self.instruction else f"the instruction at {self.pc:#x}"
        ext = f" ({self.extension})" if self.extension else ""
        at = f" in {self.function}" if self.function else ""
        where = f" at {self.where}" if self.where else ""
        return f"{what}{ext}{at}{where}, {_ORIGIN.get(self.origin, 'code of unknown origin')}"


_ORIGIN = {"go-runtime": "the Go runtime", "go": "Go code the compiler generated",
           "go-assembly": "hand-written Go assembly", "cgo": "C code linked through cgo"}


@functools.lru_cache(maxsize=8)
def _disassembler(goarch: str) -> Any:
    spec = _CS.get(goarch)
    if spec is None:
        return None
    try:
        import capstone
    except ImportError:
        return None
    md = capstone.Cs(getattr(capstone, spec[0]), getattr(capstone, spec[1]))
    md.detail = True
    return md


def decode(goarch: str, code: bytes, pc: int) -> tuple[str | None, str | None]:
    """(instruction text, the ISA extension it needs) for the bytes at pc, as far as capstone knows."""
    md = _disassembler(goarch)
    if md is None or not code:
        return None, None
    for insn in md.disasm(code, pc, 1):
        groups = [insn.group_name(g) or "" for g in insn.groups]
        ext = next((EXTENSIONS[g] for g in ("avx512", "avx2", "fma", "bmi2", "avx", "bmi", "sse42", "sse41",
                                           "ssse3", "aes", "sha", "adx", "f16c", "vfp4", "vfp3", "neon",
                                           "crc", "crypto", "v8", "v7") if g in groups), None)
        return f"{insn.mnemonic} {insn.op_str}".strip(), ext
    return None, None


def _origin(func: str | None, file: str | None) -> str:
    if file is None:
        return "unknown"
    if file.endswith((".c", ".h", ".cc", ".cpp", ".S")) or (func or "").startswith("_cgo"):
        return "cgo"
    if file.endswith(".s"):
        return "go-runtime" if (func or "").startswith(("runtime.", "internal/")) else "go-assembly"
    if (func or "").startswith(("runtime.", "internal/")):
        return "go-runtime"
    return "go"


def go_fault(stderr: str, goarch: str) -> Fault | None:
    """The fault Go's runtime reported in this output (None when it printed no fatal-signal report)."""
    m = _SIG.search(stderr)
    if m is None:
        return None
    pc = int(m.group(2), 16)
    code = b""
    if b := _BYTES.search(stderr, m.end()):
        code = bytes(int(x, 16) for x in b.group(1).split())
    insn, ext = decode(goarch, code, pc)
    func = where = None
    if f := _FRAME.search(stderr, m.end()):
        func = f.group("func").split("(")[0].strip()
        where = f"{f.group('file')}:{f.group('line')}"
    return Fault(signal=m.group(1), pc=pc, instruction=insn, extension=ext, function=func, where=where,
                 origin=_origin(func, f.group("file") if f else None))
