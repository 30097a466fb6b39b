"""Mach-O (macOS) executables: CPU types of thin and fat files, and a thin file's segments."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .io import BadFormat, read_exact, read_head

# mach/machine.h CPU_TYPE_*
_CPU_ARCH_ABI64 = 0x01000000
MACHO_CPUS: Mapping[int, str] = {7 | _CPU_ARCH_ABI64: "amd64", 7: "386", 12 | _CPU_ARCH_ABI64: "arm64",
                                 12: "arm", 18 | _CPU_ARCH_ABI64: "ppc64", 18: "ppc"}
# magic -> (struct byte order, 64-bit)
THIN_MAGICS: Mapping[bytes, tuple[str, bool]] = {
    b"\xce\xfa\xed\xfe": ("<", False),
    b"\xcf\xfa\xed\xfe": ("<", True),
    b"\xfe\xed\xfa\xce": (">", False),
    b"\xfe\xed\xfa\xcf": (">", True),
}
FAT_MAGICS = (b"\xca\xfe\xba\xbe", b"\xca\xfe\xba\xbf")     # fat_header, fat_header with fat_arch_64
LC_SEGMENT = 0x1
LC_SEGMENT_64 = 0x19


@dataclass(frozen=True)
class Section:
    name: bytes                     # NUL-padded, as in the file
    addr: int
    size: int


@dataclass(frozen=True)
class Segment:
    name: bytes
    vmaddr: int
    fileoff: int
    filesize: int
    sections: tuple[Section, ...]


def segments(f: BinaryIO, file_size: int, max_cmds: int) -> list[Segment]:
    """The LC_SEGMENT(_64) load commands of a thin file; BadFormat when the commands are malformed
    or larger than max_cmds bytes."""
    magic = read_exact(f, 0, 4)
    if magic not in THIN_MAGICS:
        raise BadFormat("not a thin Mach-O file")
    order, is64 = THIN_MAGICS[magic]
    hdr_size = 32 if is64 else 28
    _, _, _, _, ncmds, cmds_size, _ = struct.unpack(order + "7I", read_exact(f, 0, 28))
    if cmds_size > min(max_cmds, file_size - hdr_size):
        raise BadFormat("load commands too large")
    cmds = read_exact(f, hdr_size, cmds_size)
    seg_fmt, sect_fmt = (
        (order + "16s4Q2i2I", order + "16s16s2Q8I") if is64 else (order + "16s4I2i2I", order + "16s16s9I")
    )
    seg_len, sect_len = struct.calcsize(seg_fmt), struct.calcsize(sect_fmt)
    out: list[Segment] = []
    pos = 0
    for _ in range(ncmds):
        cmd, cmd_size = struct.unpack_from(order + "2I", cmds, pos)
        if cmd_size < 8 or pos + cmd_size > len(cmds):
            raise BadFormat("bad load command size")
        if cmd == (LC_SEGMENT_64 if is64 else LC_SEGMENT):
            name, vmaddr, _, fileoff, filesize, _, _, nsects, _ = struct.unpack_from(seg_fmt, cmds, pos + 8)
            if 8 + seg_len + nsects * sect_len > cmd_size:
                raise BadFormat("segment sections overflow command")
            sects = []
            for i in range(nsects):
                sect = struct.unpack_from(sect_fmt, cmds, pos + 8 + seg_len + i * sect_len)
                sects.append(Section(sect[0], sect[2], sect[3]))
            out.append(Segment(name, vmaddr, fileoff, filesize, tuple(sects)))
        pos += cmd_size
    return out


def macho_arches(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """GOARCHes in a Mach-O file: one for a thin file, one per slice for a fat one; () when not Mach-O."""
    head = read_head(path)
    if len(head) < 8:
        return ()
    magic = head[:4]
    if magic in THIN_MAGICS:
        cpu = struct.unpack_from(f"{THIN_MAGICS[magic][0]}I", head, 4)[0]
        return (MACHO_CPUS.get(cpu, f"cputype {cpu:#x}"),)
    if magic in FAT_MAGICS:
        n = struct.unpack_from(">I", head, 4)[0]
        if n == 0 or n >= 20:       # Java class files share 0xcafebabe; their "count" is a version >= 45
            return ()
        size = 32 if magic[3] == 0xBF else 20
        out = []
        for i in range(n):
            if 8 + (i + 1) * size > len(head):
                break
            cpu = struct.unpack_from(">I", head, 8 + i * size)[0]
            out.append(MACHO_CPUS.get(cpu, f"cputype {cpu:#x}"))
        return tuple(out)
    return ()


def macho_arch(path: str | os.PathLike[str]) -> str | None:
    """The GOARCH of a thin Mach-O file (or of a fat file with one slice); None otherwise."""
    arches = macho_arches(path)
    return arches[0] if len(arches) == 1 else None
