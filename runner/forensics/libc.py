"""The C library at symbol level: which imported symbols need which glibc version, and which C
library (and version) an image has, so a `missing-library` verdict names both sides.

Read from ELF version information (pyelftools): the binary's `.gnu.version_r` needs bound to its
undefined `.dynsym` symbols through `.gnu.version`, and the image's `libc.so.6` `.gnu.version_d`
definitions (the highest GLIBC_x.y it defines is its version). musl has no symbol versions; its
version is the string its dynamic linker prints ("Version 1.2.3"). Image paths are resolved as the
guest would, never leaving the image's root (an image from elsewhere is untrusted).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerDefSection, GNUVerNeedSection, GNUVerSymSection
from elftools.elf.sections import SymbolTableSection

from ..rootfs import resolve_in_root

__all__ = ["GLIBC_VERSION_MISSING", "MUSL_SYMBOL_MISSING", "glibc_version", "image_libc", "needing",
           "versioned_imports"]

GLIBC_VERSION_MISSING = re.compile(r"version `(GLIBC_[0-9.]+)' not found")
MUSL_SYMBOL_MISSING = re.compile(r"Error relocating [^:]+: ([^:]+): symbol not found")
_GLIBC = re.compile(r"GLIBC_(\d+(?:\.\d+)+)$")
_MUSL_VERSION = re.compile(rb"(?<![\w.])(1\.\d+\.\d+)\x00")  # musl is 1.x; its version string ends in NUL
_LIB_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/lib32", "/usr/lib32")


def glibc_version(name: str) -> tuple[int, ...] | None:
    """(2, 38) for 'GLIBC_2.38'; None for anything else (GLIBC_PRIVATE, GCC_3.0, ...)."""
    m = _GLIBC.match(name)
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


@functools.lru_cache(maxsize=64)
def _imports(path: str, mtime_ns: int, size: int) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            need, dynsym, versym = {}, None, None
            for sec in elf.iter_sections():
                if isinstance(sec, GNUVerNeedSection):
                    for _vn, auxs in sec.iter_versions():
                        for aux in auxs:
                            need[int(aux["vna_other"])] = str(aux.name)
                elif isinstance(sec, GNUVerSymSection):
                    versym = sec
                elif isinstance(sec, SymbolTableSection) and sec.name == ".dynsym":
                    dynsym = sec
            if dynsym is None or versym is None:
                return ()
            for i, sym in enumerate(dynsym.iter_symbols()):
                if i == 0 or sym["st_shndx"] != "SHN_UNDEF":
                    continue
                ndx = versym.get_symbol(i)["ndx"]
                if isinstance(ndx, int) and (v := need.get(ndx & 0x7FFF)) is not None:
                    out.append((str(sym.name), v))
    except (ELFError, OSError, ValueError, KeyError):
        return ()
    return tuple(sorted(set(out), key=lambda sv: (glibc_version(sv[1]) or (), sv[1], sv[0])))


def versioned_imports(path: str | os.PathLike[str]) -> tuple[tuple[str, str], ...]:
    """(symbol, version) for every undefined dynamic symbol of an ELF that is bound to a version need."""
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return _imports(str(path), st.st_mtime_ns, st.st_size)


def needing(path: str | os.PathLike[str], missing: tuple[str, ...] = (),
            above: tuple[int, ...] | None = None) -> list[tuple[str, str]]:
    """The imports whose version is one of `missing`, or (glibc) newer than `above`."""
    out = []
    for sym, ver in versioned_imports(path):
        v = glibc_version(ver)
        if ver in missing or (above is not None and v is not None and v > above):
            out.append((sym, ver))
    return out


def _lib_dirs(root: Path) -> list[Path]:
    dirs: list[Path] = []
    for guest in _LIB_DIRS:
        d = resolve_in_root(root, guest)
        if d is None or not d.is_dir() or d in dirs:
            continue
        dirs.append(d)
        try:
            subs = sorted(e.name for e in os.scandir(d) if "-linux-" in e.name)
        except OSError:
            continue
        for s in subs:
            sd = resolve_in_root(root, f"{guest}/{s}")
            if sd is not None and sd.is_dir() and sd not in dirs:
                dirs.append(sd)
    return dirs


def _glibc_of(lib: Path) -> str | None:
    try:
        with open(lib, "rb") as fh:
            elf = ELFFile(fh)
            vers = [v for sec in elf.iter_sections() if isinstance(sec, GNUVerDefSection)
                    for _verdef, auxs in sec.iter_versions()
                    if (aux := next(iter(auxs), None)) is not None
                    and (v := glibc_version(str(aux.name))) is not None]
    except (ELFError, OSError, ValueError, KeyError):
        return None
    return ".".join(map(str, max(vers))) if vers else None


def _musl_of(lib: Path) -> str | None:
    try:
        data = lib.read_bytes()
    except OSError:
        return None
    m = _MUSL_VERSION.search(data)
    return m.group(1).decode() if m else None


@functools.lru_cache(maxsize=64)
def image_libc(root: Path) -> str | None:
    """'glibc 2.36', 'musl 1.2.3' (or 'glibc', 'musl' when the version cannot be read); None if none.

    Cached per root: image roots are content-addressed, so one path always holds one image.
    """
    dirs = _lib_dirs(root)
    for d in dirs:
        if (d / "libc.so.6").is_file():
            real = resolve_in_root(root, "/" + str((d / "libc.so.6").relative_to(root)))
            if real is not None and real.is_file():
                v = _glibc_of(real)
                return f"glibc {v}" if v else "glibc"
    for d in dirs:
        try:
            names = sorted(e.name for e in os.scandir(d) if e.name.startswith("ld-musl-"))
        except OSError:
            continue
        for n in names:
            real = resolve_in_root(root, "/" + str((d / n).relative_to(root)))
            if real is not None and real.is_file():
                v = _musl_of(real)
                return f"musl {v}" if v else "musl"
    return None
