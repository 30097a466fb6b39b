"""Read the build information that the Go linker embeds in executables.

This is a port of go1.27's ``debug/buildinfo`` reader, ``runtime/debug``'s
``ParseBuildInfo``/``BuildInfo.String`` and the text layout of
``go version -m``, so that results can be compared byte for byte with Go.

Go strings are arbitrary bytes; they are decoded as UTF-8 with
``surrogateescape`` so that invalid bytes survive a round trip.
"""

from __future__ import annotations

import os
import stat
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, NamedTuple

from elftools.elf.elffile import ELFFile

from .binfmt import macho, pe
from .binfmt.io import BUILDINFO_MAGIC, MAX_VARINT_LEN, uvarint

__all__ = [
    "BUILDINFO_MAGIC",
    "MODINFO_END",
    "MODINFO_START",
    "GoBuildInfo",
    "format_like_go_version_m",
    "read_build_info",
]

# Sentinels cmd/go wraps around the modinfo string (modload.infoStart/infoEnd).
MODINFO_START = bytes.fromhex("3077af0c9274080241e1c107e6d618e6")
MODINFO_END = bytes.fromhex("f932433186182072008242104116d8f2")

_ALIGN = 16
_HEADER_SIZE = 32
# Upper bound for any single read and for the total bytes searched, so hostile
# or huge inputs cannot make us allocate or scan without limit.
_MAX_READ = 64 << 20
_CHUNK = 1 << 20
_FLAG_BIG_ENDIAN = 0x1
_FLAG_INLINE = 0x2
_PF_W = 0x2

# PE section characteristics (winnt.h).
_SCN_CNT_INITIALIZED_DATA = 0x00000040
_SCN_MEM_READ = 0x40000000
_SCN_MEM_WRITE = 0x80000000
# Go masks exactly IMAGE_SCN_ALIGN_32BYTES, not the whole alignment field.
_SCN_ALIGN_32BYTES = 0x00600000


@dataclass(frozen=True)
class GoBuildInfo:
    """Build information embedded in a Go executable."""

    go_version: str
    path: str | None
    main_module: str | None
    main_version: str | None
    # A dict in file order; excluded from the hash so instances stay hashable.
    settings: Mapping[str, str] = field(hash=False)
    deps: tuple[tuple[str, str], ...]
    raw_modinfo: str

    def setting(self, key: str) -> str | None:
        """Return the value of build setting ``key``, or None if absent."""
        return self.settings.get(key)


def read_build_info(path: str | os.PathLike[str]) -> GoBuildInfo | None:
    """None when the file is not a Go executable (no build info); raises nothing for junk input (return None).

    OSError from stat/open/read (e.g. a missing file) propagates; non-regular
    files such as directories or FIFOs yield None.
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        return None
    with open(path, "rb") as f:
        raw = _read_raw_build_info(f, st.st_size)
    if raw is None:
        return None
    vers, mod = raw
    parsed = _parse_modinfo(mod)
    if parsed is None:
        # go version -m reports an error for this file rather than any info.
        return None
    main = parsed.main
    return GoBuildInfo(
        go_version=_dec(vers),
        path=_dec(parsed.path) or None,
        main_module=(_dec(main.path) or None) if main else None,
        main_version=(_dec(main.version) or None) if main else None,
        settings={_dec(k): _dec(v) for k, v in parsed.settings},
        deps=tuple((_dec(d.path), _dec(d.version)) for d in parsed.deps),
        raw_modinfo=_dec(mod),
    )


def format_like_go_version_m(path: str | os.PathLike[str], info: GoBuildInfo) -> str:
    """Exactly the text `go version -m PATH` prints for this file.

    The module lines are rebuilt from ``info.raw_modinfo`` (which also keeps
    checksums and replacements); ValueError if it is not valid build info.
    """
    parsed = _parse_modinfo(_enc(info.raw_modinfo))
    if parsed is None:
        raise ValueError("raw_modinfo is not valid Go build info")
    out = f"{os.fspath(path)}: {info.go_version}\n"
    mod = _dec(_format_modinfo(parsed))
    if mod:
        out += "\t" + mod[:-1].replace("\n", "\n\t") + "\n"
    return out


def _dec(b: bytes) -> str:
    """Decode Go string bytes losslessly."""
    return b.decode("utf-8", "surrogateescape")


def _enc(s: str) -> bytes:
    """Inverse of _dec."""
    return s.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# Executable images


class _Region(NamedTuple):
    """A file-backed range of the target's address space."""

    vaddr: int
    offset: int
    size: int


@dataclass
class _Image:
    """Address space of an executable plus the ranges that may hold the blob."""

    f: BinaryIO
    file_size: int
    regions: list[_Region]
    search_ranges: list[tuple[int, int]]
    # Raw-file scans use file offsets, not virtual addresses, so pre-1.18
    # pointers cannot be followed there.
    follows_pointers: bool = True

    def read(self, addr: int, size: int) -> bytes:
        """Read up to size bytes at addr, stopping at the end of its region."""
        for r in self.regions:
            if r.vaddr <= addr < r.vaddr + r.size:
                off = r.offset + (addr - r.vaddr)
                if off >= self.file_size:
                    return b""
                self.f.seek(off)
                return self.f.read(min(size, r.vaddr + r.size - addr, _MAX_READ))
        return b""


def _read_raw_build_info(f: BinaryIO, file_size: int) -> tuple[bytes, bytes] | None:
    """Return (go version, framed-stripped modinfo) like readRawBuildInfo."""
    ident = f.read(16)
    img = _open_image(f, ident, file_size)
    addr = None
    for start, size in img.search_ranges:
        addr = _search_magic(img, start, size)
        if addr is not None:
            break
    if addr is None:
        return None
    header = img.read(addr, _HEADER_SIZE)
    if len(header) < _HEADER_SIZE:
        return None
    flags = header[15]
    if flags & _FLAG_INLINE:
        got = _decode_string(img, addr + _HEADER_SIZE)
        if got is None:
            return None
        vers, next_addr = got
        got = _decode_string(img, next_addr)
        if got is None:
            return None
        mod = got[0]
    else:
        if not img.follows_pointers:
            return None
        ptr_size = header[14]
        if ptr_size not in (4, 8):
            return None
        # Pointers use the target's byte order, recorded in the flags.
        fmt = (">" if flags & _FLAG_BIG_ENDIAN else "<") + ("I" if ptr_size == 4 else "Q")
        (vers_ptr,) = struct.unpack_from(fmt, header, 16)
        (mod_ptr,) = struct.unpack_from(fmt, header, 16 + ptr_size)
        vers = _read_go_string(img, fmt, ptr_size, vers_ptr)
        mod = _read_go_string(img, fmt, ptr_size, mod_ptr)
    if not vers:
        return None
    # Strip the sentinel framing; without it Go reports no module info at all.
    framed = len(mod) >= 33 and mod[len(mod) - 17] == ord("\n")
    return vers, (mod[16:-16] if framed else b"")


def _open_image(f: BinaryIO, ident: bytes, file_size: int) -> _Image:
    """Build an image for the container format, or a raw-file scan image."""
    img: _Image | None = None
    try:
        if ident.startswith(b"\x7fELF"):
            img = _elf_image(f, file_size)
        elif ident.startswith(b"MZ"):
            img = _pe_image(f, file_size)
        elif ident[:4] in macho.THIN_MAGICS:
            img = _macho_image(f, file_size)
    except Exception:
        # pyelftools and struct raise assorted error types on malformed input
        # (even OSError, from seeking to absurd offsets); any of them just
        # means "parse failed", so fall back to scanning.
        img = None
    if img is None:
        # Unknown or broken container: scan the file itself, treating file
        # offsets as addresses (enough for the inline >= go1.18 format).
        img = _Image(f, file_size, [_Region(0, 0, file_size)], [(0, file_size)], follows_pointers=False)
    img.search_ranges = _cap_ranges(img.search_ranges)
    return img


def _cap_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Trim search ranges so their total size stays within _MAX_READ."""
    out: list[tuple[int, int]] = []
    left = _MAX_READ
    for start, size in ranges:
        if left <= 0:
            break
        size = min(size, left)
        out.append((start, size))
        left -= size
    return out


def _elf_image(f: BinaryIO, file_size: int) -> _Image:
    """Image for an ELF file, using pyelftools for the headers."""
    elf = ELFFile(f)
    loads = [seg.header for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD" and seg["p_filesz"] > 0]
    regions = [_Region(int(h["p_vaddr"]), int(h["p_offset"]), int(h["p_filesz"])) for h in loads]
    try:
        num_sections = int(elf.num_sections())
        section = elf.get_section_by_name(".go.buildinfo") if num_sections else None
    except Exception:
        # Unreadable section headers are as good as stripped ones.
        num_sections, section = 0, None
    if section is not None:
        ranges = [(int(section["sh_addr"]), int(section["sh_size"]))]
    elif num_sections == 0:
        # Section headers stripped (Go itself gives up here): the blob sits at
        # the start of a writable data segment, so search those.
        ranges = [(int(h["p_vaddr"]), int(h["p_filesz"])) for h in loads if int(h["p_flags"]) & _PF_W]
    else:
        ranges = []
    return _Image(f, file_size, regions, ranges)


def _pe_image(f: BinaryIO, file_size: int) -> _Image:
    """Image for a PE file; data is the first writable initialized-data section."""
    layout = pe.read_layout(f, file_size)
    base = layout.image_base
    regions = [_Region(base + s.va, s.raw_ptr, s.raw_size) for s in layout.sections if s.raw_size]
    wanted = _SCN_CNT_INITIALIZED_DATA | _SCN_MEM_READ | _SCN_MEM_WRITE
    ranges = [(base + s.va, s.vsize) for s in layout.sections
              if s.va and s.raw_size and s.chars & ~_SCN_ALIGN_32BYTES == wanted][:1]
    return _Image(f, file_size, regions, ranges)


def _macho_image(f: BinaryIO, file_size: int) -> _Image:
    """Image for a thin Mach-O file; data is the __go_buildinfo section."""
    segs = macho.segments(f, file_size, _MAX_READ)
    # Go never resolves addresses into __PAGEZERO.
    regions = [_Region(s.vmaddr, s.fileoff, s.filesize) for s in segs
               if s.name.rstrip(b"\0") != b"__PAGEZERO" and s.filesize]
    ranges = [(sect.addr, sect.size) for s in segs for sect in s.sections
              if sect.name.rstrip(b"\0") == b"__go_buildinfo"][:1]
    return _Image(f, file_size, regions, ranges)


def _search_magic(img: _Image, start: int, size: int) -> int | None:
    """Return the first 16-byte aligned address of the magic in [start, start+size)."""
    end = start + size
    # Round up start; the magic cannot occur in the initial unaligned portion.
    start = (start + _ALIGN - 1) & ~(_ALIGN - 1)
    while start < end:
        remaining = end - start
        chunk = min(_CHUNK, remaining)
        data = img.read(start, chunk)
        if not data:
            return None
        # The magic is aligned, so it never straddles two aligned chunks.
        i = data.find(BUILDINFO_MAGIC)
        while i >= 0:
            if remaining - i < _HEADER_SIZE:
                return None
            if i % _ALIGN == 0:
                return start + i
            i = data.find(BUILDINFO_MAGIC, (i + _ALIGN - 1) & ~(_ALIGN - 1))
        start += chunk
    return None


def _decode_string(img: _Image, addr: int) -> tuple[bytes, int] | None:
    """Read a uvarint-length-prefixed string; return it and the next address."""
    try:
        length, n = uvarint(img.read(addr, MAX_VARINT_LEN))
    except ValueError:
        return None
    if length > _MAX_READ:
        return None
    addr += n
    data = img.read(addr, length)
    if len(data) < length:
        return None
    return data, addr + length


def _read_go_string(img: _Image, fmt: str, ptr_size: int, addr: int) -> bytes:
    """Read a Go string header {data, len} at addr and its bytes; b"" on failure."""
    hdr = img.read(addr, 2 * ptr_size)
    if len(hdr) < 2 * ptr_size:
        return b""
    (data_addr,) = struct.unpack_from(fmt, hdr, 0)
    (data_len,) = struct.unpack_from(fmt, hdr, ptr_size)
    if data_len > _MAX_READ:
        return b""
    data = img.read(data_addr, data_len)
    return data if len(data) == data_len else b""


# --------------------------------------------------------------------------
# modinfo text (runtime/debug.ParseBuildInfo and BuildInfo.String)


@dataclass
class _Module:
    """One mod/dep/=> line."""

    path: bytes
    version: bytes
    sum: bytes = b""
    replace: _Module | None = None


@dataclass
class _ParsedInfo:
    """Everything ParseBuildInfo keeps, as raw bytes."""

    path: bytes = b""
    main: _Module | None = None
    deps: list[_Module] = field(default_factory=list)
    settings: list[tuple[bytes, bytes]] = field(default_factory=list)


def _parse_modinfo(data: bytes) -> _ParsedInfo | None:
    """Port of ParseBuildInfo; None where Go returns an error."""
    bi = _ParsedInfo()
    last: _Module | None = None
    while data:
        line, sep, data = data.partition(b"\n")
        if not sep:
            # Go ignores a final line without a newline.
            break
        if line.startswith(b"path\t"):
            bi.path = line[5:]
        elif line.startswith(b"mod\t"):
            last = bi.main = _module_line(line[4:])
            if last is None:
                return None
        elif line.startswith(b"dep\t"):
            last = _module_line(line[4:])
            if last is None:
                return None
            bi.deps.append(last)
        elif line.startswith(b"=>\t"):
            elem = line[3:].split(b"\t")
            if len(elem) != 3 or last is None:
                return None
            last.replace = _Module(elem[0], elem[1], elem[2])
            last = None
        elif line.startswith(b"build\t"):
            setting = _parse_setting(line[6:])
            if setting is None:
                return None
            bi.settings.append(setting)
    return bi


def _module_line(text: bytes) -> _Module | None:
    """Parse the columns of a mod/dep line (2 or 3 of them)."""
    elem = text.split(b"\t")
    if len(elem) not in (2, 3):
        return None
    return _Module(elem[0], elem[1], elem[2] if len(elem) == 3 else b"")


def _parse_setting(kv: bytes) -> tuple[bytes, bytes] | None:
    """Parse KEY=VALUE of a build line, unquoting as Go does."""
    if not kv or kv[:1] == b"=":
        return None
    if kv[:1] in (b"`", b'"'):
        got = _go_unquote(kv, unescape=False)
        if got is None:
            return None
        raw_key = got[0]
        if len(kv) == len(raw_key) or kv[len(raw_key)] != ord("="):
            return None
        key = _unquote_all(raw_key) or b""
        raw_value = kv[len(raw_key) + 1 :]
    else:
        key, sep, raw_value = kv.partition(b"=")
        if not sep or _needs_quote_key(key):
            return None
    if raw_value[:1] in (b"`", b'"'):
        value = _unquote_all(raw_value)
        if value is None:
            return None
    else:
        value = raw_value
        if _needs_quote_value(value):
            return None
    return key, value


def _needs_quote_key(key: bytes) -> bool:
    """Mirror runtime/debug.quoteKey."""
    return not key or any(c in b'= \t\r\n"`' for c in key)


def _needs_quote_value(value: bytes) -> bool:
    """Mirror runtime/debug.quoteValue."""
    return any(c in b' \t\r\n"`' for c in value)


def _format_modinfo(bi: _ParsedInfo) -> bytes:
    """Port of BuildInfo.String with an empty GoVersion."""
    buf = bytearray()
    if bi.path:
        buf += b"path\t" + bi.path + b"\n"
    main = bi.main
    if main is not None and (main.path or main.version or main.sum or main.replace is not None):
        _format_module(buf, b"mod", main)
    for dep in bi.deps:
        _format_module(buf, b"dep", dep)
    for key, value in bi.settings:
        k = _go_quote(key) if _needs_quote_key(key) else key
        v = _go_quote(value) if _needs_quote_value(value) else value
        buf += b"build\t" + k + b"=" + v + b"\n"
    return bytes(buf)


def _format_module(buf: bytearray, word: bytes, m: _Module) -> None:
    """Append one module line; a replacement adds a => line (and Go's blank line)."""
    buf += word + b"\t" + m.path + b"\t" + m.version
    if m.replace is None:
        buf += b"\t" + m.sum
    else:
        buf += b"\n"
        _format_module(buf, b"=>", m.replace)
    buf += b"\n"


# --------------------------------------------------------------------------
# strconv.Quote / strconv.Unquote on bytes

_ESCAPES = {0x07: b"\\a", 0x08: b"\\b", 0x0C: b"\\f", 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t", 0x0B: b"\\v"}
_SIMPLE_UNESCAPES = {ord(k): v for k, v in zip("abfnrtv\\", b"\a\b\f\n\r\t\v\\", strict=True)}


def _decode_rune(s: bytes, i: int) -> tuple[int, int]:
    """Decode like utf8.DecodeRune: (U+FFFD, 1) for invalid encodings."""
    c = s[i]
    if c < 0x80:
        return c, 1
    n = 2 if 0xC2 <= c <= 0xDF else 3 if 0xE0 <= c <= 0xEF else 4 if 0xF0 <= c <= 0xF4 else 0
    try:
        text = s[i : i + n].decode("utf-8") if n else ""
    except UnicodeDecodeError:
        text = ""
    # Python's strict decoder rejects overlongs and surrogates, like Go's.
    return (ord(text), n) if len(text) == 1 else (0xFFFD, 1)


def _is_print(r: int) -> bool:
    """Mirror strconv.IsPrint (letters, marks, numbers, punctuation, symbols, space)."""
    if r <= 0xFF:
        return 0x20 <= r <= 0x7E or (0xA1 <= r <= 0xFF and r != 0xAD)
    # Python's isprintable excludes exactly the C* and Z* categories.
    return chr(r).isprintable()


def _go_quote(s: bytes) -> bytes:
    """Port of strconv.Quote."""
    out = bytearray(b'"')
    i = 0
    while i < len(s):
        r, width = _decode_rune(s, i)
        if width == 1 and r == 0xFFFD:
            out += b"\\x%02x" % s[i]
        elif r in (0x22, 0x5C):
            out += b"\\" + bytes([r])
        elif _is_print(r):
            out += s[i : i + width]
        elif r in _ESCAPES:
            out += _ESCAPES[r]
        elif r < 0x20 or r == 0x7F:
            out += b"\\x%02x" % r
        elif r < 0x10000:
            out += b"\\u%04x" % r
        else:
            out += b"\\U%08x" % r
        i += width
    out += b'"'
    return bytes(out)


def _unquote_all(s: bytes) -> bytes | None:
    """Port of strconv.Unquote; None on syntax error."""
    got = _go_unquote(s, unescape=True)
    if got is None or got[1]:
        return None
    return got[0]


def _is_valid_rune(r: int) -> bool:
    """Mirror utf8.ValidRune."""
    return 0 <= r < 0xD800 or 0xDFFF < r <= 0x10FFFF


def _go_unquote(s: bytes, *, unescape: bool) -> tuple[bytes, bytes] | None:
    """Port of strconv's unquote for ` and " strings: (out, rest) or None."""
    if len(s) < 2:
        return None
    quote = s[0]
    end = s.find(bytes([quote]), 1)
    if end < 0:
        return None
    end += 1
    body = s[1 : end - 1]
    if quote == ord("`"):
        if not unescape:
            return s[:end], s[end:]
        # Raw strings drop carriage returns and are not UTF-8 checked.
        return body.replace(b"\r", b""), s[end:]
    if quote != ord('"'):
        return None
    if b"\\" not in body and b"\n" not in body:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            pass  # Go re-reads it rune by rune below, replacing bad bytes.
        else:
            return (body if unescape else s[:end]), s[end:]
    buf = bytearray()
    i = 1
    while i < len(s) and s[i] != quote:
        if s[i] == ord("\n"):
            return None
        got = _unquote_char(s, i, quote)
        if got is None:
            return None
        r, multibyte, i = got
        buf += bytes([r]) if r < 0x80 or not multibyte else chr(r).encode("utf-8")
    if i >= len(s):
        return None
    i += 1
    return (bytes(buf) if unescape else s[:i]), s[i:]


def _unquote_char(s: bytes, i: int, quote: int) -> tuple[int, bool, int] | None:
    """Port of strconv.UnquoteChar at s[i]: (value, multibyte, next index)."""
    c = s[i]
    if c == quote:
        return None
    if c >= 0x80:
        r, size = _decode_rune(s, i)
        return r, True, i + size
    if c != ord("\\"):
        return c, False, i + 1
    if i + 1 >= len(s):
        return None
    c = s[i + 1]
    i += 2
    if c in _SIMPLE_UNESCAPES:
        return _SIMPLE_UNESCAPES[c], False, i
    if c in b"xuU":
        n = {ord("x"): 2, ord("u"): 4, ord("U"): 8}[c]
        digits = s[i : i + n]
        if len(digits) < n or any(d not in b"0123456789abcdefABCDEF" for d in digits):
            return None
        v = int(digits, 16)
        if c == ord("x"):
            return v, False, i + n
        if not _is_valid_rune(v):
            return None
        return v, True, i + n
    if c in b"01234567":
        digits = s[i : i + 2]
        if len(digits) < 2 or any(d not in b"01234567" for d in digits):
            return None
        v = (c - ord("0")) << 6 | int(digits, 8)
        if v > 255:
            return None
        return v, False, i + 2
    if c == quote:
        return c, False, i
    return None
