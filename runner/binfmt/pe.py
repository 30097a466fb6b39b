"""PE (Windows) executables: the COFF machine and the section table, read without running them."""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .io import BadFormat, read_exact

# winnt.h IMAGE_FILE_MACHINE_* of the machines Go builds for; the ELF equivalents live in platforms.ARCHES.
PE_MACHINES: Mapping[int, str] = {0x8664: "amd64", 0x14C: "386", 0xAA64: "arm64", 0x1C4: "arm"}


@dataclass(frozen=True)
class Section:
    """One section header: where it lives in memory (relative to the image base) and in the file."""

    va: int
    vsize: int
    raw_ptr: int
    raw_size: int
    chars: int                      # IMAGE_SCN_* characteristics


@dataclass(frozen=True)
class Layout:
    machine: int
    image_base: int
    sections: tuple[Section, ...]


def signature_offset(f: BinaryIO) -> int:
    """Where "PE\\0\\0" is (the e_lfanew field of the MZ header); BadFormat when it is not there."""
    off: int = struct.unpack("<I", read_exact(f, 0x3C, 4))[0]
    if read_exact(f, off, 4) != b"PE\0\0":
        raise BadFormat("no PE signature")
    return off


def read_layout(f: BinaryIO, file_size: int) -> Layout:
    """The machine, image base and section table; BadFormat on a truncated or malformed header."""
    (off,) = struct.unpack("<I", read_exact(f, 0x3C, 4))
    if off + 24 > file_size or read_exact(f, off, 4) != b"PE\0\0":
        raise BadFormat("no PE signature")
    machine, nsect, _, _, _, opt_size, _ = struct.unpack("<HHIIIHH", read_exact(f, off + 4, 20))
    opt = read_exact(f, off + 24, opt_size)
    image_base = 0
    if len(opt) >= 2:
        (magic,) = struct.unpack_from("<H", opt)
        if magic == 0x10B and len(opt) >= 32:
            (image_base,) = struct.unpack_from("<I", opt, 28)
        elif magic == 0x20B and len(opt) >= 32:
            (image_base,) = struct.unpack_from("<Q", opt, 24)
    table = read_exact(f, off + 24 + opt_size, 40 * nsect)
    sections = []
    for i in range(nsect):
        vsize, va, raw_size, raw_ptr = struct.unpack_from("<IIII", table, 40 * i + 8)
        (chars,) = struct.unpack_from("<I", table, 40 * i + 36)
        sections.append(Section(va, vsize, raw_ptr, raw_size, chars))
    return Layout(machine, image_base, tuple(sections))


def pe_machine(path: str | os.PathLike[str]) -> str | None:
    """The GOARCH of a PE file's COFF Machine field (None: not PE or a machine Go does not build)."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"MZ":
                return None
            off = signature_offset(f)
            (machine,) = struct.unpack("<H", read_exact(f, off + 4, 2))
    except (OSError, BadFormat, OverflowError):
        return None
    return PE_MACHINES.get(machine)
