"""The instruction at a faulting PC, decoded by capstone, and the ISA extension it needs.

The extension tables are platform facts (platforms.ISA): capstone's instruction groups first, then
the mnemonic, because capstone groups neither LSE atomics nor POWER8-10 nor popcnt/lzcnt/movbe.
capstone 5 cannot decode RISC-V Zba/Zbb or V at all; for those the opcode fields name the extension.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from .. import platforms


@functools.lru_cache(maxsize=16)
def disassembler(goarch: str) -> Any:
    isa = platforms.ISA.get(goarch)
    if isa is None:
        return None
    try:
        import capstone
    except ImportError:
        return None
    mode = 0
    for name in isa.capstone[1].split("|"):
        mode |= getattr(capstone, name)
    md = capstone.Cs(getattr(capstone, isa.capstone[0]), mode)
    md.detail = True
    return md


def insn_size(goarch: str) -> int:
    """How many bytes to read at a PC so the instruction there is whole."""
    isa = platforms.ISA.get(goarch)
    return isa.insn_size if isa else 4


def extension_of(goarch: str, mnemonic: str, groups: list[str]) -> str | None:
    """The extension an instruction needs, from its capstone groups, else its mnemonic."""
    isa = platforms.ISA.get(goarch)
    if isa is None:
        return None
    for group, ext in isa.groups:
        if group in groups:
            return ext
    for pattern, ext in isa.mnemonics:
        if re.fullmatch(pattern, mnemonic):
            return ext
    return None


def decode(goarch: str, code: bytes, pc: int) -> tuple[str | None, str | None]:
    """(instruction text, the ISA extension it needs) for the bytes at pc, as far as capstone knows."""
    md = disassembler(goarch)
    if md is None or not code:
        return None, None
    for insn in md.disasm(code, pc, 1):
        groups = [insn.group_name(g) or "" for g in insn.groups]
        return f"{insn.mnemonic} {insn.op_str}".strip(), extension_of(goarch, insn.mnemonic, groups)
    if goarch == "riscv64":
        return _riscv_fallback(code)
    return None, None


# RISC-V opcodes capstone 5 does not know: (mask, match, mnemonic, extension) over a 32-bit word
_RV: tuple[tuple[int, int, str, str], ...] = (
    (0xFE00707F, 0x20002033, "sh1add", "Zba"), (0xFE00707F, 0x20004033, "sh2add", "Zba"),
    (0xFE00707F, 0x20006033, "sh3add", "Zba"), (0xFE00707F, 0x0800003B, "add.uw", "Zba"),
    (0xFE00707F, 0x2000203B, "sh1add.uw", "Zba"), (0xFE00707F, 0x2000403B, "sh2add.uw", "Zba"),
    (0xFE00707F, 0x2000603B, "sh3add.uw", "Zba"), (0xFC00707F, 0x0800101B, "slli.uw", "Zba"),
    (0xFE00707F, 0x40007033, "andn", "Zbb"), (0xFE00707F, 0x40006033, "orn", "Zbb"),
    (0xFE00707F, 0x40004033, "xnor", "Zbb"), (0xFFF0707F, 0x60001013, "clz", "Zbb"),
    (0xFFF0707F, 0x60101013, "ctz", "Zbb"), (0xFFF0707F, 0x60201013, "cpop", "Zbb"),
    (0xFFF0707F, 0x6000101B, "clzw", "Zbb"), (0xFFF0707F, 0x6010101B, "ctzw", "Zbb"),
    (0xFFF0707F, 0x6020101B, "cpopw", "Zbb"), (0xFE00707F, 0x0A006033, "max", "Zbb"),
    (0xFE00707F, 0x0A007033, "maxu", "Zbb"), (0xFE00707F, 0x0A004033, "min", "Zbb"),
    (0xFE00707F, 0x0A005033, "minu", "Zbb"), (0xFFF0707F, 0x60401013, "sext.b", "Zbb"),
    (0xFFF0707F, 0x60501013, "sext.h", "Zbb"), (0xFFF0707F, 0x0800403B, "zext.h", "Zbb"),
    (0xFE00707F, 0x60001033, "rol", "Zbb"), (0xFE00707F, 0x60005033, "ror", "Zbb"),
    (0xFC00707F, 0x60005013, "rori", "Zbb"), (0xFFF0707F, 0x28705013, "orc.b", "Zbb"),
    (0xFFF0707F, 0x6B805013, "rev8", "Zbb"),
    (0x0000007F, 0x00000057, "vector op (OP-V)", "V"),
)


def _riscv_fallback(code: bytes) -> tuple[str | None, str | None]:
    if len(code) < 4 or code[0] & 3 != 3:
        return None, None
    word = int.from_bytes(code[:4], "little")
    for mask, match, name, ext in _RV:
        if word & mask == match:
            return f"{name} (0x{word:08x})", ext
    opcode, width = word & 0x7F, (word >> 12) & 7
    if opcode in (0x07, 0x27) and width in (0, 5, 6, 7):      # vector loads/stores
        return f"vector {'load' if opcode == 0x07 else 'store'} (0x{word:08x})", "V"
    return None, None
