"""Bounded reads shared by the binary-format readers: truncated or hostile input gives BadFormat (or
nothing), never an unbounded read."""

from __future__ import annotations

import os
from typing import BinaryIO

# Go's linker writes this (16-byte aligned) ahead of the build info in every format it emits.
BUILDINFO_MAGIC = b"\xff Go buildinf:"
MAX_VARINT_LEN = 10


class BadFormat(Exception):
    """A container header that does not follow its format's rules."""


def read_head(path: str | os.PathLike[str], n: int = 4096) -> bytes:
    """The first n bytes of a file (b"" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def read_exact(f: BinaryIO, offset: int, size: int) -> bytes:
    """Read exactly size bytes at offset or raise BadFormat."""
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise BadFormat("short read")
    return data


def uvarint(data: bytes, pos: int = 0) -> tuple[int, int]:
    """An unsigned LEB128 at pos, as encoding/binary.Uvarint reads it: (value, next position).

    ValueError when it runs past the end or overflows 64 bits. Go's build info and wasm's section
    sizes, counts and names all use this encoding.
    """
    x = s = 0
    for i in range(MAX_VARINT_LEN):
        if pos + i >= len(data):
            raise ValueError("truncated varint")
        c = data[pos + i]
        if c < 0x80:
            if i == MAX_VARINT_LEN - 1 and c > 1:
                raise ValueError("varint overflows 64 bits")
            return x | c << s, pos + i + 1
        x |= (c & 0x7F) << s
        s += 7
    raise ValueError("varint overflows 64 bits")
