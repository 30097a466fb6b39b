"""The guest core file qemu-user writes when the emulated program dies of an uncaught signal.

qemu writes an ELF core of the *guest* (`qemu_<prog>_<date>-<time>_<pid>.core`): its PT_NOTE holds
NT_PRSTATUS, whose pr_reg is the guest's general registers in the layout qemu's elfload.c gives for
that target. The notes come right after the program headers, so a core cut short by RLIMIT_CORE
still holds them (xrun bounds the core to a few hundred KiB and reads nothing else).

Which register is the PC, per ELF machine (index into pr_reg, in qemu 7.2's elf_core_copy_regs):
x86-64 rip is 16 (user_regs_struct), i386 eip 12, ARM r15, AArch64 pc 32 (after x0-x30, sp),
PowerPC nip 32 (after gpr0-31), s390x the PSW address 1 (after the PSW mask), MIPS CP0_EPC after
r0-r31, lo and hi (34 on mips64; 40 on 32-bit MIPS, whose pr_reg starts with 6 padding words). riscv64 has no core dump in qemu 7.2 (no USE_ELF_CORE_DUMP).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

# e_machine -> index of the PC in pr_reg
PC_INDEX = {"EM_X86_64": 16, "EM_386": 12, "EM_ARM": 15, "EM_AARCH64": 32, "EM_PPC64": 32, "EM_PPC": 32,
            "EM_S390": 1, "EM_MIPS": 40}
READ_LIMIT = 1 << 20     # never read more than this of a core


@dataclass(frozen=True)
class CoreInfo:
    """What the core says: the signal that killed the guest and its PC then."""

    signal: int
    pc: int
    machine: str


def _prstatus_regs_offset(elf_class: int) -> int:
    # pr_info (3 ints), pr_cursig (short + pad), pr_sigpend, pr_sighold (longs), 4 pids (ints),
    # 4 timevals (2 longs each), then pr_reg
    long = 8 if elf_class == 64 else 4
    return 12 + 4 + 2 * long + 16 + 8 * long


def read_core(path: str | os.PathLike[str]) -> CoreInfo | None:
    """The signal and PC in a guest core (None when it is not a core xrun can read)."""
    try:
        with open(path, "rb") as f:
            data = f.read(READ_LIMIT)
    except OSError:
        return None
    import io

    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.header.e_type != "ET_CORE":
            return None
        machine = elf.header.e_machine
        index = PC_INDEX.get(machine)
        if machine == "EM_MIPS" and elf.elfclass == 64:
            index = 34
        if index is None:
            return None
        for seg in elf.iter_segments():
            if seg.header.p_type != "PT_NOTE":
                continue
            for note in seg.iter_notes():  # type: ignore[attr-defined]
                if note.n_type != "NT_PRSTATUS":
                    continue
                desc = note.n_desc if isinstance(note.n_desc, bytes) else note.n_desc.encode("latin-1")
                return _parse(desc, elf.elfclass, elf.little_endian, machine, index)
    except (ELFError, struct.error, ValueError, OSError):
        return None
    return None


def _parse(desc: bytes, elf_class: int, little: bool, machine: str, index: int) -> CoreInfo | None:
    end = "<" if little else ">"
    signo = struct.unpack_from(f"{end}i", desc, 0)[0]
    word = "Q" if elf_class == 64 else "I"
    off = _prstatus_regs_offset(elf_class) + index * struct.calcsize(word)
    if off + struct.calcsize(word) > len(desc):
        return None
    pc = struct.unpack_from(f"{end}{word}", desc, off)[0]
    if machine == "EM_ARM":
        pc &= ~1        # a Thumb PC has bit 0 set in some layouts
    return CoreInfo(signo, pc, machine)
