"""Platform facts, in one table: Go/OCI/qemu/ELF/Debian names, levels, CPU models and profiles.

Nothing else in the package compares arch names; it asks this module. Every CPU model named
here was run on qemu-user 7.2 with Go binaries of its level and of the next level up (see
tests/e2e/test_baselines.py, which proves each baseline on the real emulator).
"""

from __future__ import annotations

import platform as _platform
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType


@dataclass(frozen=True)
class CpuModel:
    """A qemu -cpu model and the highest Go level of its arch it can execute (None: none of them)."""

    name: str
    level: str | None
    note: str = ""
    tcg_gap: str = ""   # what qemu's TCG cannot provide of this model (its level then fails under qemu)


@dataclass(frozen=True)
class Arch:
    """One GOARCH and everything the rest of the tool needs to know about it."""

    goarch: str
    oci: str
    elf_machine: str            # pyelftools' e_machine name
    elf_class: int              # 32 or 64
    endian: str                 # "little" | "big"
    qemu: str | None            # qemu-user target name: qemu-<qemu>-static
    level_var: str | None       # GOAMD64, GOARM, ...
    levels: tuple[str, ...]     # oldest to newest, as written in a target variant
    default_level: str | None   # Go's default when no variant is given
    models: tuple[CpuModel, ...] = ()   # oldest to newest
    baseline: Mapping[str, str] = field(default_factory=dict)   # level -> model
    debian: Mapping[str, str] = field(default_factory=dict)     # level ("" = any) -> Debian arch
    run_env: Mapping[str, str] = field(default_factory=dict)    # env set for every emulated run
    run_env_why: str = ""
    cpu_check_off: bool = False  # qemu accepts -cpu MODEL,check=off (x86 only)
    zig: str | None = None      # zig's name for the arch in -target ARCH-linux-ABI

    def env_value(self, level: str) -> str:
        """The value of level_var for a variant (GOARM wants "6", not "v6")."""
        return level[1:] if self.goarch == "arm" else level

    def level_from_env(self, value: str) -> str | None:
        """Parse a build-info value (GOARM=7,softfloat; GOARM64=v8.0,lse) back to a level."""
        base = value.split(",")[0].strip()
        if self.goarch == "arm" and base and not base.startswith("v"):
            base = "v" + base
        return base if base in self.levels else None

    def level_index(self, level: str | None) -> int:
        """Position of a level in levels (the default level when None)."""
        lvl = level or self.default_level
        return self.levels.index(lvl) if lvl in self.levels else 0

    def model(self, name: str) -> CpuModel | None:
        """The known model of that name (qemu model names are case-sensitive)."""
        base = name.split(",")[0]
        return next((m for m in self.models if m.name == base), None)

    def debian_arch(self, level: str | None) -> str | None:
        """The Debian architecture whose packages run on this level."""
        lvl = level or self.default_level or ""
        return self.debian.get(lvl) or self.debian.get("")

    def baseline_model(self, level: str | None) -> str | None:
        """The oldest model that runs this level: the verified table, else the first model at or above it."""
        lvl = level or self.default_level or ""
        if lvl in self.baseline:
            return self.baseline[lvl]
        want = self.level_index(lvl)
        for m in self.models:
            if m.level is not None and m.level in self.levels and self.levels.index(m.level) >= want:
                return m.name
        return None

    def oci_variant(self, level: str | None) -> str | None:
        """The OCI platform variant of an image for this level: arm's is the level, arm64 images say v8."""
        if self.goarch == "arm":
            return level or self.default_level
        return "v8" if self.goarch == "arm64" else None

    def cpu_arg(self, model: str) -> str:
        """The -cpu argument: check=off silences per-thread TCG warnings but exists only on x86."""
        if self.cpu_check_off and "check=" not in model:
            return f"{model},check=off"
        return model


def _m(*pairs: tuple[str, str | None], tcg_gaps: Mapping[str, str] | None = None) -> tuple[CpuModel, ...]:
    gaps = tcg_gaps or {}
    return tuple(CpuModel(n, lvl, tcg_gap=gaps.get(lvl or "", "")) for n, lvl in pairs)


_ARM64_LEVELS = tuple(f"v8.{i}" for i in range(10)) + tuple(f"v9.{i}" for i in range(6))

ARCHES: Mapping[str, Arch] = MappingProxyType({a.goarch: a for a in (
    Arch("amd64", "amd64", "EM_X86_64", 64, "little", "x86_64", "GOAMD64",
         ("v1", "v2", "v3", "v4"), "v1",
         _m(("qemu64", "v1"), ("Conroe", "v1"), ("Penryn", "v1"), ("Nehalem", "v2"), ("Westmere", "v2"), ("SandyBridge", "v2"),
            ("IvyBridge", "v2"), ("Haswell", "v3"), ("Broadwell", "v3"), ("Skylake-Client", "v3"),
            ("Skylake-Server", "v4"), ("Cascadelake-Server", "v4"), ("Icelake-Server", "v4"),
            tcg_gaps={"v4": "AVX-512"}),    # qemu 7.2 TCG has no AVX-512: v4 fails under emulation
         {"v1": "qemu64", "v2": "Nehalem", "v3": "Haswell", "v4": "Skylake-Server"},
         {"": "amd64"}, cpu_check_off=True),
    Arch("386", "386", "EM_386", 32, "little", "i386", "GO386", ("softfloat", "sse2"), "sse2",
         _m(("486", None), ("pentium", "softfloat"), ("pentium2", "softfloat"), ("pentium3", "softfloat"),
            ("qemu32", "sse2"), ("coreduo", "sse2"), ("n270", "sse2")),
         {"softfloat": "pentium", "sse2": "qemu32"}, {"": "i386"},
         run_env={"GODEBUG": "asyncpreemptoff=1"},
         run_env_why="qemu-i386 7.2 crashes Go 386 binaries (\"morestack on g0\", \"bad g in signal "
                     "handler\") unless async preemption is off; xrun sets GODEBUG=asyncpreemptoff=1 "
                     "so an emulator bug is not blamed on the binary",
         cpu_check_off=True),
    Arch("arm", "arm", "EM_ARM", 32, "little", "arm", "GOARM", ("v5", "v6", "v7"), "v7",
         _m(("arm926", "v5"), ("arm1026", "v5"), ("arm1136", "v6"), ("arm1176", "v6"),
            ("arm11mpcore", "v6"), ("cortex-a7", "v7"), ("cortex-a8", "v7"), ("cortex-a9", "v7"),
            ("cortex-a15", "v7"), ("max", "v7")),
         {"v5": "arm926", "v6": "arm1176", "v7": "cortex-a7"},
         {"v5": "armel", "v6": "armel", "v7": "armhf"}),
    Arch("arm64", "arm64", "EM_AARCH64", 64, "little", "aarch64", "GOARM64", _ARM64_LEVELS, "v8.0",
         # qemu 7.2 has no v8.1-only model: neoverse-n1 is the oldest that runs v8.1 (LSE atomics).
         _m(("cortex-a35", "v8.0"), ("cortex-a53", "v8.0"), ("cortex-a57", "v8.0"), ("cortex-a72", "v8.0"),
            ("neoverse-n1", "v8.2"), ("cortex-a76", "v8.2"), ("a64fx", "v8.2"), ("max", "v8.2")),
         {"v8.0": "cortex-a53", "v8.1": "neoverse-n1", "v8.2": "neoverse-n1"},
         {"": "arm64"}),
    Arch("ppc64le", "ppc64le", "EM_PPC64", 64, "little", "ppc64le", "GOPPC64",
         ("power8", "power9", "power10"), "power8",
         _m(("power7", None), ("power8", "power8"), ("power9", "power9"), ("power10", "power10")),
         {"power8": "power8", "power9": "power9", "power10": "power10"}, {"": "ppc64el"}),
    Arch("ppc64", "ppc64", "EM_PPC64", 64, "big", "ppc64", "GOPPC64",
         ("power8", "power9", "power10"), "power8",
         _m(("power7", None), ("power8", "power8"), ("power9", "power9"), ("power10", "power10")),
         {"power8": "power8", "power9": "power9", "power10": "power10"}),
    Arch("s390x", "s390x", "EM_S390", 64, "big", "s390x", None, (), None,
         _m(("z900-base", None), ("qemu", None)),
         {"": "qemu"}, {"": "s390x"}),
    Arch("riscv64", "riscv64", "EM_RISCV", 64, "little", "riscv64", "GORISCV64",
         ("rva20u64", "rva22u64", "rva23u64"), "rva20u64",
         # plain rv64 has Zba/Zbb and so runs rva22u64: the RV64GC SiFive U54 is the rva20u64 baseline.
         _m(("sifive-e51", None), ("sifive-u54", "rva20u64"), ("rv64", "rva22u64"),
            ("rv64,v=true", "rva23u64")),
         {"rva20u64": "sifive-u54", "rva22u64": "rv64", "rva23u64": "rv64,v=true"}, {"": "riscv64"}),
    Arch("mips64le", "mips64le", "EM_MIPS", 64, "little", "mips64el", "GOMIPS64",
         ("softfloat", "hardfloat"), "hardfloat",
         # 5Kc has no FPU: it runs softfloat and traps on hardfloat; R4000 runs both.
         _m(("5Kc", "softfloat"), ("R4000", "hardfloat")), {"softfloat": "5Kc", "hardfloat": "R4000"},
         {"": "mips64el"}),
    Arch("mips64", "mips64", "EM_MIPS", 64, "big", "mips64", "GOMIPS64",
         ("softfloat", "hardfloat"), "hardfloat", _m(("5Kc", "softfloat"), ("R4000", "hardfloat")),
         {"softfloat": "5Kc", "hardfloat": "R4000"}),
    Arch("mipsle", "mipsle", "EM_MIPS", 32, "little", "mipsel", "GOMIPS",
         ("softfloat", "hardfloat"), "hardfloat", _m(("24Kf", "hardfloat"),),
         {"softfloat": "24Kf", "hardfloat": "24Kf"}, {"": "mipsel"}),
    Arch("mips", "mips", "EM_MIPS", 32, "big", "mips", "GOMIPS",
         ("softfloat", "hardfloat"), "hardfloat", _m(("24Kf", "hardfloat"),),
         {"softfloat": "24Kf", "hardfloat": "24Kf"}),
    Arch("wasm", "wasm", "", 32, "little", None, None, (), None),
)})


_ZIG = {"amd64": "x86_64", "386": "x86", "arm": "arm", "arm64": "aarch64", "ppc64le": "powerpc64le",
        "ppc64": "powerpc64", "s390x": "s390x", "riscv64": "riscv64", "mips64le": "mips64el",
        "mips64": "mips64", "mipsle": "mipsel", "mips": "mips"}
ARCHES = MappingProxyType({k: replace(a, zig=_ZIG.get(k)) for k, a in ARCHES.items()})


@dataclass(frozen=True)
class DebianArch:
    """A Debian architecture's names that image definitions refer to."""

    musl_arch: str
    glibc_loader: str       # the PT_INTERP Go's linker writes for the GOARCHes on this Debian arch


DEBIAN_ARCHES: Mapping[str, DebianArch] = MappingProxyType({
    "amd64": DebianArch("x86_64", "/lib64/ld-linux-x86-64.so.2"),
    "i386": DebianArch("i386", "/lib/ld-linux.so.2"),
    "armel": DebianArch("arm", "/lib/ld-linux.so.3"),
    "armhf": DebianArch("armhf", "/lib/ld-linux-armhf.so.3"),
    "arm64": DebianArch("aarch64", "/lib/ld-linux-aarch64.so.1"),
    "ppc64el": DebianArch("powerpc64le", "/lib64/ld64.so.2"),
    "s390x": DebianArch("s390x", "/lib/ld64.so.1"),
    "riscv64": DebianArch("riscv64", "/lib/ld-linux-riscv64-lp64d.so.1"),
    "mips64el": DebianArch("mips64el", "/lib64/ld.so.1"),
})


@dataclass(frozen=True)
class OS:
    """One GOOS: whether xrun can run its binaries here, and the artifact extension."""

    goos: str
    ext: str = ""
    runnable: bool = False
    why_not: str = ""
    runner: str | None = None       # not Linux: what runs it here (runner/engines/foreign.py)
    arches: tuple[str, ...] = ()    # with a runner: the GOARCHes it can execute (empty: all)

    def runs(self, goarch: str) -> bool:
        """Whether xrun can execute this OS's binaries of that GOARCH here."""
        return self.runnable and (not self.arches or goarch in self.arches)


OSES: Mapping[str, OS] = MappingProxyType({o.goos: o for o in (
    OS("linux", runnable=True),
    OS("windows", ".exe", runnable=True, runner="wine", arches=("amd64", "386"),
       why_not="wine runs only x86 Windows programs (amd64, 386); windows/arm64 needs a Windows on Arm "
               "machine"),
    OS("darwin", why_not="macOS binaries cannot run on a Linux host (no Mach-O loader, no emulator)"),
    OS("ios", why_not="iOS binaries cannot run on a Linux host"),
    OS("freebsd", why_not="FreeBSD binaries need a FreeBSD kernel; qemu-user here emulates Linux only"),
    OS("netbsd", why_not="NetBSD binaries need a NetBSD kernel"),
    OS("openbsd", why_not="OpenBSD binaries need an OpenBSD kernel"),
    OS("dragonfly", why_not="DragonFly binaries need a DragonFly kernel"),
    OS("solaris", why_not="Solaris binaries need a Solaris kernel"),
    OS("illumos", why_not="illumos binaries need an illumos kernel"),
    OS("aix", why_not="AIX binaries need an AIX kernel"),
    OS("android", why_not="Android binaries need Bionic and an Android userland"),
    OS("plan9", why_not="Plan 9 binaries need a Plan 9 kernel"),
    OS("js", ".wasm", runnable=True, runner="node + wasm_exec_node.js"),
    OS("wasip1", ".wasm", runnable=True, runner="node WASI preview1"),
)})


@dataclass(frozen=True)
class HardwareProfile:
    """A real machine, as the qemu model per arch that behaves like its CPU."""

    name: str
    description: str
    cpu: Mapping[str, str]


HARDWARE_PROFILES: Mapping[str, HardwareProfile] = MappingProxyType({p.name: p for p in (
    HardwareProfile("pi-zero", "Raspberry Pi Zero / Zero W (BCM2835, ARM1176JZF-S, ARMv6 + VFPv2)",
                    {"arm": "arm1176"}),
    HardwareProfile("pi1", "Raspberry Pi 1 (BCM2835, ARM1176JZF-S, ARMv6 + VFPv2)", {"arm": "arm1176"}),
    HardwareProfile("pi2", "Raspberry Pi 2 v1.1 (BCM2836, Cortex-A7, ARMv7)", {"arm": "cortex-a7"}),
    HardwareProfile("pi3", "Raspberry Pi 3 (BCM2837, Cortex-A53, ARMv8.0)",
                    {"arm": "cortex-a15", "arm64": "cortex-a53"}),
    HardwareProfile("pi4", "Raspberry Pi 4 (BCM2711, Cortex-A72, ARMv8.0)",
                    {"arm": "cortex-a15", "arm64": "cortex-a72"}),
    HardwareProfile("graviton2", "AWS Graviton2 (Neoverse N1, ARMv8.2)", {"arm64": "neoverse-n1"}),
    HardwareProfile("x86-64-v2-vm", "an x86-64 VM exposing Nehalem-class CPUID (SSE4.2, no AVX)",
                    {"amd64": "Nehalem", "386": "Nehalem"}),
    HardwareProfile("x86-64-v3", "an x86-64 machine with AVX2/BMI2/FMA (Haswell and newer)",
                    {"amd64": "Haswell", "386": "Haswell"}),
)})

BUILTIN_PROFILES = ("baseline", "host", *HARDWARE_PROFILES)

_HOST_MACHINES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
                  "i686": "386", "i386": "386", "armv7l": "arm", "armv6l": "arm",
                  "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_goarch() -> str:
    """The GOARCH of the machine xrun runs on."""
    m = _platform.machine()
    return _HOST_MACHINES.get(m, m)


def arch(goarch: str) -> Arch:
    """The facts for a GOARCH (KeyError when unknown)."""
    return ARCHES[goarch]


def elf_machine_to_goarch(machine: str, elf_class: int, endian: str) -> str | None:
    """Which GOARCH an ELF header (e_machine, EI_CLASS, EI_DATA) stands for."""
    for a in ARCHES.values():
        if a.elf_machine == machine and a.elf_class == elf_class and a.endian == endian:
            return a.goarch
    return None


def next_level(a: Arch, level: str | None) -> str | None:
    """The level just above this one (None at the top)."""
    i = a.level_index(level)
    return a.levels[i + 1] if i + 1 < len(a.levels) else None
