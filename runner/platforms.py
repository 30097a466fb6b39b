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
            ("qemu32", "sse2"), ("coreduo", "sse2"), ("n270", "sse2"),
            # every x86-64 CPU runs 386 code with SSE2, and qemu-i386 has the same named models
            *((n, "sse2") for n in ("Conroe", "Penryn", "Nehalem", "Westmere", "SandyBridge", "IvyBridge", "Haswell",
                                    "Broadwell", "Skylake-Client", "Skylake-Server", "Cascadelake-Server",
                                    "Icelake-Server"))),
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
    """A generic machine class, as the qemu model per arch that behaves like its CPU."""

    name: str
    description: str
    cpu: Mapping[str, str]


HARDWARE_PROFILES: Mapping[str, HardwareProfile] = MappingProxyType({p.name: p for p in (
    HardwareProfile("x86-64-v2-vm", "an x86-64 VM exposing Nehalem-class CPUID (SSE4.2, no AVX)",
                    {"amd64": "Nehalem", "386": "Nehalem"}),
    HardwareProfile("x86-64-v3", "an x86-64 machine with AVX2/BMI2/FMA (Haswell and newer)",
                    {"amd64": "Haswell", "386": "Haswell"}),
)})

# (the real machines, pi-zero to z14, are runner/profiles/catalogue.py; profiles.BUILTIN_PROFILES lists all)

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


# --- ISA extensions (issue 13): which extension an instruction needs, and which each CPU model has ---
#
# An instruction's extension comes from capstone's instruction groups first, then from its mnemonic
# (capstone leaves LSE atomics, POWER8-10, popcnt/lzcnt/movbe and MIPS FPU ops ungrouped). The model
# tables are what the CPU has on real hardware (qemu 7.2's model definitions, target/*/cpu*.c); what
# qemu's TCG cannot execute of them is TCG_LACKS. Names are the ones users search for.

@dataclass(frozen=True)
class Isa:
    """How to decode one arch's instructions and name the extension each needs."""

    capstone: tuple[str, str]                      # capstone (CS_ARCH_*, CS_MODE_* joined by |)
    groups: tuple[tuple[str, str], ...]            # capstone group -> extension, most specific first
    mnemonics: tuple[tuple[str, str], ...] = ()    # regex over the whole mnemonic -> extension
    insn_size: int = 4                             # bytes to read at the PC (x86: 15)


_X86_GROUPS = (("avx512", "AVX-512F"), ("avx2", "AVX2"), ("fma", "FMA"), ("bmi2", "BMI2"), ("bmi", "BMI1"),
               ("f16c", "F16C"), ("avx", "AVX"), ("aes", "AES-NI"), ("pclmul", "PCLMULQDQ"), ("sha", "SHA"),
               ("adx", "ADX"), ("sse42", "SSE4.2"), ("sse41", "SSE4.1"), ("ssse3", "SSSE3"), ("sse3", "SSE3"),
               ("sse4a", "SSE4a"), ("fma4", "FMA4"), ("xop", "XOP"), ("tbm", "TBM"), ("3dnow", "3DNow!"),
               ("sse2", "SSE2"), ("sse1", "SSE"), ("mmx", "MMX"), ("cmov", "CMOV"))
_X86_MNEMONICS = ((r"popcnt", "POPCNT"), (r"lzcnt", "LZCNT"), (r"movbe", "MOVBE"), (r"rdrand", "RDRAND"),
                  (r"rdseed", "RDSEED"), (r"cmpxchg16b", "CX16"), (r"xgetbv|xsave\w*|xrstor\w*", "XSAVE"),
                  (r"cmov\w+", "CMOV"), (r"f\w+", "x87"))
_LSE = r"(ld|st)(add|clr|eor|set|smax|smin|umax|umin)(a|l|al)?[bh]?|swp(a|l|al)?[bh]?|casp?(a|l|al)?[bh]?"
_PPC_P10 = r"p(ld|lw\w*|lh\w*|lb\w*|st\w*|addi|la|li|lxv\w*|stxv\w*|lfs|lfd|stfs|stfd)|brd|brw|brh|setn?bcr?|xxsplti\w+|xxpermx|xxeval|xxblendv\w|vstribr|vstril\w*|lxvp|stxvp"
_PPC_P9 = (r"mod[su][dw]|cnttz[dw]\.?|darn|setb|addpcis|cmpeqb|cmprb|maddhd|maddhdu|maddld|xxbr[dwhq]|"
           r"lxvx?|stxvx?|lxsd|stxsd|lxssp|stxssp|lxvb16x|lxvh8x|stxvb16x|stxvh8x|lxvll?|stxvll?|"
           r"mtvsrdd|mtvsrws|mfvsrld|xsadd[dq]p\w*|xscmp\w+qp|xxextractuw|xxinsertw|vpermr|vnegw|vnegd|"
           r"vprtyb\w|vcmpne[bhw]\.?|vcmpnez[bhw]\.?|vclzlsbb|vctzlsbb|vctz[bhwd]|vextu[bhw][lr]x|copy|paste\.?")
_PPC_P8 = (r"m[tf]vsr(d|wz|wa)|vpopcnt[bhwd]|vcipher\w*|vncipher\w*|vsbox|vpmsum[bhwd]|vshasigma[wd]|"
           r"v(add|sub)u[dq]m|v(add|sub)e?c?uq\w*|vmrg[eo]w|vmax[su]d|vmin[su]d|vcmp(equ|gts|gtu)d\.?|"
           r"v(sl|sr|sra|rl)d|vclz[bhwd]|vgbbd|vbpermq|vpks[dw][su]s|vpkudu[ms]|vupk[hl]sw|veqv|vnand|vorc|"
           r"lxsiwzx|lxsiwax|lxsspx|stxsiwx|stxsspx|xsaddsp|xsmulsp|xsdivsp|xssubsp|xscvdpspn|xscvspdpn|"
           r"lq|stq|lbarx|lharx|stbcx\.|sthcx\.|lqarx|stqcx\.|icbt|tabort\w*\.?|tbegin\.|tend\.|tsr\.")
_MIPS_FPU = r"(d?m[tf]c1|[cl][wd]c1|s[wd]c1|[cm][tf]hc1|ctc1|cfc1|bc1[ft]l?|\w+\.(s|d|ps|w|l)|c\.\w+\.(s|d))"

ISA: Mapping[str, Isa] = MappingProxyType({
    "amd64": Isa(("CS_ARCH_X86", "CS_MODE_64"), _X86_GROUPS, _X86_MNEMONICS, 15),
    "386": Isa(("CS_ARCH_X86", "CS_MODE_32"), _X86_GROUPS, _X86_MNEMONICS, 15),
    "arm": Isa(("CS_ARCH_ARM", "CS_MODE_ARM"),
               (("crypto", "ARMv8 crypto"), ("crc", "CRC32"), ("v8", "ARMv8"), ("neon", "NEON"),
                ("vfp4", "VFPv4"), ("vfp3", "VFPv3"), ("divide", "IDIV"), ("databarrier", "ARMv7"),
                ("v7", "ARMv7"), ("v6t2", "ARMv6T2"), ("v6k", "ARMv6K"), ("v6", "ARMv6"), ("vfp2", "VFPv2"),
                ("v5te", "ARMv5TE")),
               ((r"ldrex[bhd]|strex[bhd]|clrex|yield|wfe|wfi|sev", "ARMv6K"), (r"ldrex|strex", "ARMv6"),
                (r"mov[wt]|ubfx|sbfx|bfi|bfc|rbit|mls", "ARMv6T2"), (r"[su]div", "IDIV"),
                (r"dmb|dsb|isb", "ARMv7"))),
    "arm64": Isa(("CS_ARCH_ARM64", "CS_MODE_ARM"),
                 (("sve2", "SVE2"), ("sve", "SVE"), ("sme", "SME"), ("dotprod", "DotProd"), ("fullfp16", "FP16"),
                  ("rcpc", "RCPC"), ("lse", "LSE"), ("rdm", "RDM"), ("sha3", "SHA3"), ("sm4", "SM4"),
                  ("sha2", "ARMv8 crypto"), ("aes", "ARMv8 crypto"), ("crypto", "ARMv8 crypto"), ("crc", "CRC32")),
                 ((_LSE, "LSE"), (r"sqrdml[as]h", "RDM"), (r"[su]dot", "DotProd"), (r"ldapu?r\w*", "RCPC"),
                  (r"pac\w+|aut\w+|xpac\w*|reta[ab]|bra[ab]z?|blra[ab]z?", "PAuth"), (r"bti", "BTI"),
                  (r"ld64b|st64bv?0?", "LS64"), (r"cpy\w+|set[pme]\w*", "MOPS"))),
    "ppc64le": Isa(("CS_ARCH_PPC", "CS_MODE_64|CS_MODE_LITTLE_ENDIAN"), (),
                   ((_PPC_P10, "POWER10"), (_PPC_P9, "POWER9"), (_PPC_P8, "POWER8"))),
    "ppc64": Isa(("CS_ARCH_PPC", "CS_MODE_64|CS_MODE_BIG_ENDIAN"), (),
                 ((_PPC_P10, "POWER10"), (_PPC_P9, "POWER9"), (_PPC_P8, "POWER8"))),
    "s390x": Isa(("CS_ARCH_SYSZ", "CS_MODE_BIG_ENDIAN"),
                 (("vector", "vector facility (z13)"), ("distinctops", "distinct-operands facility (z196)"),
                  ("fpextension", "floating-point extension facility (z196)"),
                  ("highword", "high-word facility (z196)"), ("loadstoreoncond", "load/store-on-condition (z196)"),
                  ("interlockedaccess1", "interlocked-access facility 1 (z196)")),
                 ((r"v\w+", "vector facility (z13)"),), 6),
    "riscv64": Isa(("CS_ARCH_RISCV", "CS_MODE_RISCV64|CS_MODE_RISCVC"),
                   (("hasStdExtD", "D"), ("hasStdExtF", "F"), ("hasStdExtA", "A"), ("hasStdExtM", "M"),
                    ("hasStdExtC", "C")),
                   ((r"sh[123]add(\.uw)?|add\.uw|slli\.uw", "Zba"),
                    (r"andn|orn|xnor|clzw?|ctzw?|cpopw?|max|maxu|min|minu|sext\.[bh]|zext\.h|rolw?|rorw?|roriw?|orc\.b|rev8", "Zbb"),
                    (r"v\w+", "V"))),
    "mips64le": Isa(("CS_ARCH_MIPS", "CS_MODE_MIPS64|CS_MODE_LITTLE_ENDIAN"), (), ((_MIPS_FPU, "FPU"),)),
    "mips64": Isa(("CS_ARCH_MIPS", "CS_MODE_MIPS64|CS_MODE_BIG_ENDIAN"), (), ((_MIPS_FPU, "FPU"),)),
    "mipsle": Isa(("CS_ARCH_MIPS", "CS_MODE_MIPS32|CS_MODE_LITTLE_ENDIAN"), (), ((_MIPS_FPU, "FPU"),)),
    "mips": Isa(("CS_ARCH_MIPS", "CS_MODE_MIPS32|CS_MODE_BIG_ENDIAN"), (), ((_MIPS_FPU, "FPU"),)),
})


def _cumulative(*steps: tuple[str, str]) -> dict[str, frozenset[str]]:
    """Each model has its own extensions and every earlier model's ("Haswell": "AVX2 FMA ...")."""
    out: dict[str, frozenset[str]] = {}
    have: frozenset[str] = frozenset()
    for names, exts in steps:
        have = have | frozenset(e.replace("_", " ") for e in exts.split())
        for n in names.split():
            out[n] = have
    return out


_X86_EXTENSIONS = {
    "486": frozenset({"x87"}), "pentium": frozenset({"x87"}), "pentium2": frozenset({"x87", "MMX", "CMOV"}),
    "pentium3": frozenset({"x87", "MMX", "CMOV", "SSE"}),
    "n270": frozenset({"x87", "MMX", "CMOV", "SSE", "SSE2", "SSE3", "SSSE3", "MOVBE"}),
    **_cumulative(("qemu32 qemu64", "x87 MMX CMOV SSE SSE2 SSE3 CX16"), ("coreduo", ""), ("Conroe", "SSSE3"), ("Penryn", "SSE4.1"),
                  ("Nehalem", "SSE4.2 POPCNT"), ("Westmere", "AES-NI PCLMULQDQ"),
                  ("SandyBridge", "AVX XSAVE"), ("IvyBridge", "F16C RDRAND"),
                  ("Haswell", "AVX2 FMA BMI1 BMI2 MOVBE LZCNT"), ("Broadwell", "ADX RDSEED"),
                  ("Skylake-Client", ""), ("Skylake-Server", "AVX-512F"), ("Cascadelake-Server", ""),
                  ("Icelake-Server", "SHA")),
}
MODEL_EXTENSIONS: Mapping[str, Mapping[str, frozenset[str]]] = MappingProxyType({
    "amd64": _X86_EXTENSIONS, "386": _X86_EXTENSIONS,
    "arm": _cumulative(("arm926 arm1026", "ARMv5TE VFPv2"), ("arm1136", "ARMv6"),
                       ("arm1176 arm11mpcore", "ARMv6K"),
                       ("cortex-a8 cortex-a9", "ARMv6T2 ARMv7 VFPv3 NEON"), ("cortex-a7 cortex-a15", "VFPv4 IDIV"),
                       ("max", "ARMv8 CRC32 ARMv8_crypto")),
    "arm64": _cumulative(("cortex-a35 cortex-a53 cortex-a57 cortex-a72", "ARMv8.0 NEON CRC32 ARMv8_crypto"),
                         ("neoverse-n1 cortex-a76", "LSE RDM FP16 DotProd RCPC"),
                         ("a64fx", "SVE"), ("max", "SVE2 SHA3 SM4 PAuth BTI MOPS")),
    "ppc64le": _cumulative(("power7", "VSX"), ("power8", "POWER8"), ("power9", "POWER9"), ("power10", "POWER10")),
    "ppc64": _cumulative(("power7", "VSX"), ("power8", "POWER8"), ("power9", "POWER9"), ("power10", "POWER10")),
    "s390x": _cumulative(("z900-base", ""),
                         ("qemu", "vector_facility_(z13) distinct-operands_facility_(z196) "
                                  "floating-point_extension_facility_(z196) high-word_facility_(z196) "
                                  "load/store-on-condition_(z196) interlocked-access_facility_1_(z196)")),
    "riscv64": _cumulative(("sifive-e51", "M A C"), ("sifive-u54", "F D"), ("rv64", "Zba Zbb"), ("rv64,v=true", "V")),
    "mips64le": _cumulative(("5Kc", ""), ("R4000", "FPU")),
    "mips64": _cumulative(("5Kc", ""), ("R4000", "FPU")),
    "mipsle": {"24Kf": frozenset({"FPU"})}, "mips": {"24Kf": frozenset({"FPU"})},
})
# qemu 7.2's TCG executes none of these even when the model has them (x86: AVX-512 is filtered out)
TCG_LACKS: Mapping[str, frozenset[str]] = MappingProxyType({
    "amd64": frozenset({"AVX-512F"}), "386": frozenset({"AVX-512F"}), "arm64": frozenset({"SME"}),
})
# golang.org/x/sys/cpu's field that tells Go code at run time whether the CPU has an extension
XSYS_CPU: Mapping[str, str] = MappingProxyType({
    "AVX": "cpu.X86.HasAVX", "AVX2": "cpu.X86.HasAVX2", "AVX-512F": "cpu.X86.HasAVX512F", "FMA": "cpu.X86.HasFMA",
    "BMI1": "cpu.X86.HasBMI1", "BMI2": "cpu.X86.HasBMI2", "AES-NI": "cpu.X86.HasAES",
    "PCLMULQDQ": "cpu.X86.HasPCLMULQDQ", "SHA": "cpu.X86.HasSHA", "ADX": "cpu.X86.HasADX",
    "SSE4.2": "cpu.X86.HasSSE42", "SSE4.1": "cpu.X86.HasSSE41", "SSSE3": "cpu.X86.HasSSSE3",
    "SSE3": "cpu.X86.HasSSE3", "POPCNT": "cpu.X86.HasPOPCNT", "RDRAND": "cpu.X86.HasRDRAND",
    "RDSEED": "cpu.X86.HasRDSEED", "MOVBE": "cpu.X86.HasMOVBE", "F16C": "cpu.X86.HasF16C",
    "NEON": "cpu.ARM.HasNEON", "VFPv3": "cpu.ARM.HasVFPv3", "VFPv4": "cpu.ARM.HasVFPv4", "IDIV": "cpu.ARM.HasIDIVA",
    "LSE": "cpu.ARM64.HasATOMICS", "SVE": "cpu.ARM64.HasSVE", "SVE2": "cpu.ARM64.HasSVE2",
    "CRC32": "cpu.ARM64.HasCRC32", "DotProd": "cpu.ARM64.HasASIMDDP", "RDM": "cpu.ARM64.HasASIMDRDM",
    "SHA3": "cpu.ARM64.HasSHA3", "FP16": "cpu.ARM64.HasFPHP", "RCPC": "cpu.ARM64.HasLRCPC",
    "POWER9": "cpu.PPC64.IsPOWER9", "POWER8": "cpu.PPC64.IsPOWER8", "V": "cpu.RISCV64.HasV",
    "Zba": "cpu.RISCV64.HasZba", "Zbb": "cpu.RISCV64.HasZbb",
    "vector facility (z13)": "cpu.S390X.HasVX",
})
# qemu's "+feature"/"-feature" names -> the extension names above (a profile's cpu: "Westmere,+avx")
_QEMU_FEATURES = {"avx": "AVX", "avx2": "AVX2", "fma": "FMA", "bmi1": "BMI1", "bmi2": "BMI2", "f16c": "F16C",
                  "aes": "AES-NI", "pclmulqdq": "PCLMULQDQ", "sha-ni": "SHA", "adx": "ADX", "sse4.2": "SSE4.2",
                  "sse4_2": "SSE4.2", "sse4.1": "SSE4.1", "sse4_1": "SSE4.1", "ssse3": "SSSE3", "popcnt": "POPCNT",
                  "movbe": "MOVBE", "lzcnt": "LZCNT", "abm": "LZCNT", "avx512f": "AVX-512F", "rdrand": "RDRAND",
                  "rdseed": "RDSEED", "xsave": "XSAVE", "v": "V", "zba": "Zba", "zbb": "Zbb", "sve": "SVE",
                  "sve2": "SVE2", "lse": "LSE", "pauth": "PAuth", "neon": "NEON", "vfp": "VFPv2"}


def model_extensions(goarch: str, cpu: str) -> frozenset[str] | None:
    """The extensions a CPU model (with any ",+feat,-feat,feat=on|off|true|false" after it) has on real
    hardware; None when the model is not in the table."""
    table = MODEL_EXTENSIONS.get(goarch, {})
    parts = cpu.split(",")
    base = table.get(parts[0]) if "=" not in cpu else table.get(cpu) or table.get(parts[0])
    if base is None:
        return None
    have = set(base)
    for p in parts[1:]:
        name, _, val = p.lstrip("+-").partition("=")
        ext = _QEMU_FEATURES.get(name.lower())
        if ext is None:
            continue
        if p.startswith("-") or val in ("off", "false"):
            have.discard(ext)
        elif p.startswith("+") or val in ("on", "true"):
            have.add(ext)
    return frozenset(have)

# what each Go level lets the compiler emit (and Go's startup check, where it has one, demands)
LEVEL_EXTENSIONS: Mapping[str, Mapping[str, frozenset[str]]] = MappingProxyType({
    "amd64": _cumulative(("v1", "SSE SSE2"), ("v2", "SSE3 SSSE3 SSE4.1 SSE4.2 POPCNT CX16"),
                         ("v3", "AVX AVX2 BMI1 BMI2 F16C FMA LZCNT MOVBE XSAVE"), ("v4", "AVX-512F")),
    "386": {"softfloat": frozenset(), "sse2": frozenset({"SSE", "SSE2"})},
    "arm": _cumulative(("v5", "ARMv5TE"), ("v6", "ARMv6 VFPv2"), ("v7", "ARMv7 VFPv3")),
    "arm64": {lvl: frozenset({"ARMv8.0"} | ({"LSE", "RDM"} if lvl != "v8.0" else set()))
              for lvl in _ARM64_LEVELS},
    "ppc64le": _cumulative(("power8", "VSX POWER8"), ("power9", "POWER9"), ("power10", "POWER10")),
    "ppc64": _cumulative(("power8", "VSX POWER8"), ("power9", "POWER9"), ("power10", "POWER10")),
    "riscv64": _cumulative(("rva20u64", "M A F D C"), ("rva22u64", "Zba Zbb"), ("rva23u64", "V")),
    "mips64le": {"softfloat": frozenset(), "hardfloat": frozenset({"FPU"})},
    "mips64": {"softfloat": frozenset(), "hardfloat": frozenset({"FPU"})},
    "mipsle": {"softfloat": frozenset(), "hardfloat": frozenset({"FPU"})},
    "mips": {"softfloat": frozenset(), "hardfloat": frozenset({"FPU"})},
    "s390x": {"": frozenset({"vector facility (z13)"})},
})


def level_gap(goarch: str, level: str | None, cpu: str) -> tuple[str, ...] | None:
    """The extensions a Go level needs that a CPU model lacks (None: one of the two is not in the tables)."""
    a = ARCHES.get(goarch)
    lvl = level or (a.default_level if a else None) or ""
    need = LEVEL_EXTENSIONS.get(goarch, {}).get(lvl)
    have = model_extensions(goarch, cpu)
    if need is None or have is None:
        return None
    return tuple(sorted(need - have))
