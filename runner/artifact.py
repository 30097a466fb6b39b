"""What a built file is, read without running it: format, ELF header, loader, libraries, Go build info."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection

from . import platforms
from .binfmt import foreign_arch_mismatch
from .buildinfo import GoBuildInfo, read_build_info

EF_ARM_ABI_FLOAT_SOFT = 0x200
EF_ARM_ABI_FLOAT_HARD = 0x400


@dataclass(frozen=True)
class ArtifactFacts:
    """Static facts about one file; `goarch` is derived from the ELF header when it is ELF."""

    path: str
    format: str                         # elf | pe | macho | wasm | script | missing | unknown
    size: int = 0
    elf_machine: str | None = None
    elf_class: int | None = None
    endian: str | None = None
    osabi: str | None = None
    e_flags: int = 0
    interp: str | None = None           # PT_INTERP
    needed: tuple[str, ...] = ()        # DT_NEEDED
    glibc_max: str | None = None        # highest GLIBC_x.y symbol version required
    goarch: str | None = None
    build: GoBuildInfo | None = field(default=None, compare=False)

    @property
    def static(self) -> bool:
        return self.format == "elf" and self.interp is None

    @property
    def go_level(self) -> str | None:
        """The Go level recorded in the build info (GOAMD64, GOARM, ...), else None."""
        if self.build is None or self.goarch is None:
            return None
        a = platforms.ARCHES.get(self.goarch)
        if a is None or a.level_var is None:
            return None
        val = self.build.setting(a.level_var)
        return a.level_from_env(val) if val else a.default_level

    def describe(self) -> str:
        """One line: 'ELF 64-bit LSB AArch64, static, Go go1.27.3 GOARM64=v8.0'."""
        if self.format != "elf":
            return {"missing": "no such file", "pe": "PE (Windows) executable", "macho": "Mach-O executable",
                    "wasm": "WebAssembly module", "script": "a script (#!)"}.get(self.format, "not an executable")
        bits = f"ELF {self.elf_class}-bit {'LSB' if self.endian == 'little' else 'MSB'} "
        bits += (self.elf_machine or "?").removeprefix("EM_")
        if self.elf_machine == "EM_ARM" and self.e_flags & (EF_ARM_ABI_FLOAT_HARD | EF_ARM_ABI_FLOAT_SOFT):
            bits += ", hard-float ABI" if self.e_flags & EF_ARM_ABI_FLOAT_HARD else ", soft-float ABI"
        bits += f", dynamic (interpreter {self.interp})" if self.interp else ", static"
        if self.build is not None:
            bits += f", Go {self.build.go_version}"
            a = platforms.ARCHES.get(self.goarch or "")
            if a and a.level_var and self.build.setting(a.level_var):
                bits += f" {a.level_var}={self.build.setting(a.level_var)}"
            cgo = self.build.setting("CGO_ENABLED")
            if cgo is not None:
                bits += f" CGO_ENABLED={cgo}"
        return bits


def _format_of(head: bytes) -> str:
    if head.startswith(b"\x7fELF"):
        return "elf"
    if head.startswith(b"MZ"):
        return "pe"
    if head[:4] in (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
                    b"\xca\xfe\xba\xbe"):
        return "macho"
    if head.startswith(b"\x00asm"):
        return "wasm"
    if head.startswith(b"#!"):
        return "script"
    return "unknown"


@functools.lru_cache(maxsize=256)
def _inspect_cached(path: str, mtime_ns: int, size: int) -> ArtifactFacts:
    with open(path, "rb") as f:
        head = f.read(64)
        fmt = _format_of(head)
        if fmt != "elf":
            return ArtifactFacts(path, fmt, size, build=read_build_info(path) if fmt in ("pe", "macho") else None)
        try:
            elf = ELFFile(f)
            machine = str(elf["e_machine"])
            eclass = int(elf.elfclass)
            endian = "little" if elf.little_endian else "big"
            osabi = str(elf["e_ident"]["EI_OSABI"])
            interp = None
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    interp = str(seg.get_interp_name())  # type: ignore[attr-defined]
            needed: list[str] = []
            glibc: list[tuple[int, ...]] = []
            for sec in elf.iter_sections():
                if isinstance(sec, DynamicSection):
                    needed += [str(getattr(t, "needed", "")) for t in sec.iter_tags()
                               if t.entry.d_tag == "DT_NEEDED"]
                elif isinstance(sec, GNUVerNeedSection):
                    for _verneed, auxs in sec.iter_versions():
                        for aux in auxs:
                            n = str(aux.name)
                            if n.startswith("GLIBC_") and n[6:].replace(".", "").isdigit():
                                glibc.append(tuple(int(x) for x in n[6:].split(".")))
            e_flags = int(elf["e_flags"])
        except (ELFError, ValueError, KeyError, OSError) as e:
            return ArtifactFacts(path, "unknown", size, osabi=f"unreadable ELF: {e}")
    goarch = platforms.elf_machine_to_goarch(machine, eclass, endian)
    glibc_max = "GLIBC_" + ".".join(map(str, max(glibc))) if glibc else None
    return ArtifactFacts(path, "elf", size, machine, eclass, endian, osabi, e_flags, interp,
                         tuple(needed), glibc_max, goarch, read_build_info(path))


def inspect(path: str | os.PathLike[str]) -> ArtifactFacts:
    """Facts about a file (cached by path, mtime and size)."""
    p = str(path)
    try:
        st = os.stat(p)
    except OSError:
        return ArtifactFacts(p, "missing")
    return _inspect_cached(p, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True)
class Mismatch:
    explanation: str
    fix: str


def check_against_target(facts: ArtifactFacts, goos: str, goarch: str, level: str | None) -> Mismatch | None:
    """Does the artifact's header (and Go build info) say what the target asked for?"""
    want = platforms.arch(goarch)
    expected_fmt = {"windows": "pe", "darwin": "macho", "ios": "macho", "js": "wasm", "wasip1": "wasm"}.get(goos, "elf")
    fix_env = ("check build.env, the target's env and the build command: something sets GOOS/GOARCH/"
               f"{want.level_var or 'the level'} itself (a hard-coded value, a Makefile, an `env` prefix) "
               "instead of taking them from xrun")
    if facts.format != expected_fmt:
        return Mismatch(f"the artifact is {facts.describe()}, but target {goos}/{goarch} needs "
                        f"{ {'elf': 'an ELF', 'pe': 'a PE', 'macho': 'a Mach-O', 'wasm': 'a wasm'}[expected_fmt]} file",
                        fix_env)
    if facts.format in ("pe", "macho", "wasm") and (
            why := foreign_arch_mismatch(facts.path, facts.format, goos, goarch)) is not None:
        return Mismatch(why, fix_env)
    bi = facts.build
    if facts.format == "elf":
        got = f"{facts.elf_machine} {facts.elf_class}-bit {facts.endian}-endian"
        exp = f"{want.elf_machine} {want.elf_class}-bit {want.endian}-endian"
        if got != exp:
            return Mismatch(f"the ELF header says {got} ({facts.goarch or 'unknown GOARCH'}), but target "
                            f"{goos}/{goarch} needs {exp}", fix_env)
        if goos == "linux" and facts.osabi not in (None, "ELFOSABI_SYSV", "ELFOSABI_LINUX"):
            abi = facts.osabi.removeprefix("ELFOSABI_")
            return Mismatch(f"the ELF header's OS ABI is {abi}: a binary for that system, not Linux "
                            f"(Linux runs OS ABI SYSV or GNU/Linux)", f"build it for linux/{goarch}" +
                            ("" if bi is not None else " (the compiler's target triple, e.g. -target "
                             f"{want.qemu or goarch}-linux-gnu)"))
        if (goarch == "arm" and (level or want.default_level) == "v5"
                and facts.e_flags & EF_ARM_ABI_FLOAT_HARD):
            return Mismatch("the ELF header says hard-float ABI (EF_ARM_ABI_FLOAT_HARD: floats in VFP registers), "
                            "but target linux/arm/v5 is soft-float (Debian armel; ARMv5 cores have no VFP)",
                            "build it soft-float for ARMv5: `-target arm-linux-gnueabi -march=armv5te "
                            "-mfloat-abi=soft` (gcc: arm-linux-gnueabi-gcc), or target linux/arm/v7 (armhf)")
    if bi is not None:
        if bi.setting("GOOS") not in (None, goos) or bi.setting("GOARCH") not in (None, goarch):
            return Mismatch(f"the Go build info says GOOS={bi.setting('GOOS')} GOARCH={bi.setting('GOARCH')}, "
                            f"but the target is {goos}/{goarch}", fix_env)
        if want.level_var and level:
            val = bi.setting(want.level_var)
            got_level = want.level_from_env(val) if val else want.default_level
            if got_level != level:
                return Mismatch(f"the Go build info says {want.level_var}={val or '(default)'} "
                                f"(level {got_level}), but the target asks for {level}", fix_env)
    return None


def loader_present(root: Path, interp: str) -> bool:
    """Whether PT_INTERP resolves to a file inside root (symlinks followed inside root, not the host)."""
    cur = root
    parts = [p for p in interp.split("/") if p]
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in (".", ""):
            continue
        if name == "..":
            cur = cur.parent if cur != root else root
            continue
        nxt = cur / name
        if nxt.is_symlink():
            hops += 1
            if hops > 40:
                return False
            link = os.readlink(nxt)
            if link.startswith("/"):
                cur = root
            parts = [p for p in link.split("/") if p] + parts
            continue
        if not nxt.exists():
            return False
        cur = nxt
    return cur.is_file()
