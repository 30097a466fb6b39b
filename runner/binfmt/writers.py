"""Binaries xarch writes itself: a code-free PE forwarder DLL."""

from __future__ import annotations

import struct
from collections.abc import Mapping


def forwarder_dll(machine: int, name: str, forwards: Mapping[str, str]) -> bytes:
    """A code-free PE DLL whose exports forward to other DLLs' functions (e.g. to advapi32.X).

    Wine before 8.13 (Debian 12 ships 8.0) has no bcryptprimitives.dll, so every Go >= 1.24 Windows
    binary dies with "fatal error: bcryptprimitives.dll not found". ProcessPrng(PBYTE, SIZE_T) ->
    BOOL is forwarded to advapi32.SystemFunction036 (RtlGenRandom(PVOID, ULONG) -> BOOLEAN): same
    calling convention on x86 and x64, Go's runtime tests only the low byte of the result, and
    crypto/rand asks for far less than 4 GiB at a time.
    """
    pe64 = machine in (0x8664, 0xAA64)
    rva, falign, salign = 0x1000, 0x200, 0x1000
    names = sorted(forwards)
    n = len(names)
    eat = rva + 40
    npt = eat + 4 * n
    ords = npt + 4 * n
    strings = bytearray()

    def put(s: str) -> int:
        at = ords + 2 * n + len(strings)
        strings.extend(s.encode() + b"\0")
        return at

    name_rva = put(name)
    name_rvas = [put(x) for x in names]
    fwd_rvas = [put(forwards[x]) for x in names]
    edata = struct.pack("<IIHHIIIIIII", 0, 0, 0, 0, name_rva, 1, n, n, eat, npt, ords)
    edata += b"".join(struct.pack("<I", r) for r in fwd_rvas)
    edata += b"".join(struct.pack("<I", r) for r in name_rvas)
    edata += b"".join(struct.pack("<H", i) for i in range(n)) + bytes(strings)
    raw = -(-len(edata) // falign) * falign
    image = rva + -(-len(edata) // salign) * salign
    dirs = [(rva, len(edata))] + [(0, 0)] * 15         # only the export directory
    common = (salign, falign, 6, 0, 0, 0, 6, 0, 0, image, falign, 0, 2, 0x100)
    if pe64:
        opt = struct.pack("<HBBIIIIIQIIHHHHHHIIIIHHQQQQII", 0x20B, 14, 0, 0, raw, 0, 0, rva,
                          0x180000000, *common, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    else:
        opt = struct.pack("<HBBIIIIIIIIIHHHHHHIIIIHHIIIIII", 0x10B, 14, 0, 0, raw, 0, 0, rva, 0,
                          0x10000000, *common, 0x100000, 0x1000, 0x100000, 0x1000, 0, 16)
    opt += b"".join(struct.pack("<II", *d) for d in dirs)
    chars = 0x2002 | (0x20 if pe64 else 0x100)          # DLL | EXECUTABLE_IMAGE | LARGE_ADDRESS / 32BIT
    coff = struct.pack("<HHIIIHH", machine, 1, 0, 0, 0, len(opt), chars)
    sect = struct.pack("<8sIIIIIIHHI", b".edata", len(edata), rva, raw, falign, 0, 0, 0, 0, 0x40000040)
    hdr = b"MZ" + bytes(58) + struct.pack("<I", 0x40) + b"PE\0\0" + coff + opt + sect
    return hdr + bytes(falign - len(hdr)) + edata + bytes(raw - len(edata))
