"""Real machines as builtin profiles: each is the /proc/cpuinfo lines of that machine, resolved like a
captured one (machine.py), so a catalogue entry and a user's capture take the same path.

The lines are trimmed to what xarch reads (and a few neighbours, so they read as the real thing);
`source` says where the feature list comes from. `levels` is the claim each entry's test checks on
the real emulator: per arch, the highest Go level the machine runs and, where one exists, the next
level with the verdict it gets (tests/e2e/test_machine_profiles.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .machine import Machine, Resolved, parse_cpuinfo, resolve_machine

__all__ = ["CATALOGUE", "CatalogueEntry", "catalogue_machine", "resolved_catalogue"]

_X86_BASE = ("fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 "
             "syscall nx lm constant_tsc rep_good nopl cpuid")


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    description: str
    source: str
    cpuinfo: str
    # goarch -> (the level it runs, (the level above, its verdict) or None when no Go level above needs more)
    levels: Mapping[str, tuple[str, tuple[str, str] | None]] = field(default_factory=dict)


def _x86(model: str, flags: str) -> str:
    return f"vendor_id\t: GenuineIntel\nmodel name\t: {model}\nflags\t\t: {_X86_BASE} {flags}\n"


def _arm(part: str, arch: str, features: str, name: str = "", implementer: str = "0x41") -> str:
    head = f"model name\t: {name}\n" if name else ""
    return (f"processor\t: 0\n{head}Features\t: {features}\nCPU implementer\t: {implementer}\n"
            f"CPU architecture: {arch}\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 4\n")


_ENTRIES = (
    CatalogueEntry(
        "nehalem", "Intel Nehalem (Core i7-920, Xeon 5500): SSE4.2 and POPCNT, no AES-NI, no AVX",
        "Intel ARK (Core i7-920: SSE4.1/4.2) and Linux /proc/cpuinfo of a Xeon X5570",
        _x86("Intel(R) Core(TM) i7 CPU 920 @ 2.67GHz",
             "ht tm pbe rdtscp arch_perfmon pebs bts xtopology nonstop_tsc pni dtes64 monitor ds_cpl vmx est tm2 "
             "ssse3 cx16 xtpr pdcm sse4_1 sse4_2 popcnt lahf_lm"),
        {"amd64": ("v2", ("v3", "unsupported-cpu"))}),
    CatalogueEntry(
        "sandybridge", "Intel Sandy Bridge (Core i7-2600, Xeon E5-2600): AVX, no AVX2/BMI/FMA",
        "Intel ARK (Core i7-2600: AVX, AES-NI) and Linux /proc/cpuinfo of a Xeon E5-2670",
        _x86("Intel(R) Core(TM) i7-2600 CPU @ 3.40GHz",
             "ht rdtscp pni pclmulqdq dtes64 monitor vmx est ssse3 cx16 sse4_1 sse4_2 x2apic popcnt "
             "tsc_deadline_timer aes xsave avx lahf_lm"),
        {"amd64": ("v2", ("v3", "unsupported-cpu"))}),
    CatalogueEntry(
        "haswell", "Intel Haswell (Core i7-4770, Xeon E5 v3): AVX2, BMI1/2, FMA, MOVBE; no AVX-512",
        "Intel ARK (Core i7-4770: AVX2) and Linux /proc/cpuinfo of a Xeon E5-2676 v3 (AWS m4)",
        _x86("Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz",
             "ht rdtscp pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes "
             "xsave avx f16c rdrand lahf_lm abm fsgsbase bmi1 avx2 smep bmi2 erms invpcid"),
        {"amd64": ("v3", ("v4", "unsupported-cpu"))}),
    CatalogueEntry(
        "xeon-skylake-sp", "Intel Xeon Skylake-SP (Xeon Platinum 8175M, AWS m5/c5): AVX-512 F/CD/BW/DQ/VL",
        "Intel ARK (Xeon Platinum 8175M: AVX-512) and Linux /proc/cpuinfo of an AWS m5.large",
        _x86("Intel(R) Xeon(R) Platinum 8175M CPU @ 2.50GHz",
             "ht pni pclmulqdq ssse3 fma cx16 pcid sse4_1 sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave "
             "avx f16c rdrand hypervisor lahf_lm abm 3dnowprefetch fsgsbase tsc_adjust bmi1 avx2 smep bmi2 erms "
             "invpcid mpx avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt "
             "xsavec xgetbv1 xsaves ida arat pku ospke"),
        {"amd64": ("v3", ("v4", "emulation-unsupported"))}),
    CatalogueEntry(
        "atom-silvermont", "Intel Atom Silvermont (Atom C2750, Celeron J1900): SSE4.2, AES-NI, MOVBE; no AVX",
        "Intel ARK (Atom C2750: SSE4.1/4.2, AES) and Linux /proc/cpuinfo of an Atom C2750 (Avoton)",
        _x86("Intel(R) Atom(TM) CPU  C2750  @ 2.40GHz",
             "ht rdtscp pni pclmulqdq dtes64 monitor ds_cpl vmx est tm2 ssse3 cx16 xtpr pdcm sse4_1 sse4_2 movbe "
             "popcnt tsc_deadline_timer aes rdrand lahf_lm 3dnowprefetch erms"),
        {"amd64": ("v2", ("v3", "unsupported-cpu"))}),
    CatalogueEntry(
        "amd-bulldozer", "AMD Bulldozer (Opteron 6200, FX-8150): AVX, FMA4, XOP, SSE4a; no AVX2, no FMA3",
        "AMD Family 15h BKDG (Bulldozer: AVX, FMA4, XOP) and Linux /proc/cpuinfo of an Opteron 6272",
        _x86("AMD Opteron(TM) Processor 6272",
             "ht mmxext fxsr_opt pdpe1gb rdtscp nonstop_tsc extd_apicid aperfmperf pni pclmulqdq monitor ssse3 "
             "cx16 sse4_1 sse4_2 popcnt aes xsave avx lahf_lm cmp_legacy svm extapic cr8_legacy abm sse4a "
             "misalignsse 3dnowprefetch osvw ibs xop skinit wdt lwp fma4 nodeid_msr topoext perfctr_core"
             ).replace("GenuineIntel", "AuthenticAMD"),
        {"amd64": ("v2", ("v3", "unsupported-cpu"))}),
    CatalogueEntry(
        "graviton1", "AWS Graviton (A1 instances, Cortex-A72): ARMv8.0 with crypto, no LSE atomics",
        "aws-graviton-getting-started (A1: Cortex-A72) and Linux /proc/cpuinfo of an a1.large",
        _arm("0xd08", "8", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
        {"arm64": ("v8.0", ("v8.1", "unsupported-cpu")), "arm": ("v7", None)}),
    CatalogueEntry(
        "graviton2", "AWS Graviton2 (Neoverse N1, ARMv8.2): LSE atomics, DotProd, RCPC",
        "aws-graviton-getting-started (Graviton2: Neoverse N1) and Linux /proc/cpuinfo of a c6g.large",
        _arm("0xd0c", "8", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
             "dcpop asimddp ssbs"),
        {"arm64": ("v8.1", None), "arm": ("v7", None)}),
    CatalogueEntry(
        "graviton3", "AWS Graviton3 (Neoverse V1, ARMv8.4): SVE, LSE2, BF16, I8MM, PAuth",
        "aws-graviton-getting-started (Graviton3: Neoverse V1, SVE) and Linux /proc/cpuinfo of a c7g.large",
        _arm("0xd40", "8", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt "
             "fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs paca pacg "
             "dcpodp svei8mm svebf16 i8mm bf16 dgh rng"),
        {"arm64": ("v8.1", None)}),
    CatalogueEntry(
        "ampere-altra", "Ampere Altra (Neoverse N1, ARMv8.2; Azure Dpsv5, OCI A1, Hetzner CAX)",
        "Ampere Altra product brief (80 Neoverse N1 cores) and Linux /proc/cpuinfo of an OCI A1 instance",
        _arm("0xd0c", "8", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
             "dcpop asimddp ssbs"),
        {"arm64": ("v8.1", None), "arm": ("v7", None)}),
    CatalogueEntry(
        "pi-zero", "Raspberry Pi Zero / Zero W (BCM2835, ARM1176JZF-S, ARMv6 + VFPv2): 32-bit only",
        "raspberrypi.com documentation (Processors: BCM2835) and Raspberry Pi OS /proc/cpuinfo",
        _arm("0xb76", "7", "half thumb fastmult vfp edsp java tls", "ARMv6-compatible processor rev 7 (v6l)"),
        {"arm": ("v6", ("v7", "unsupported-cpu"))}),
    CatalogueEntry(
        "pi1", "Raspberry Pi 1 (BCM2835, ARM1176JZF-S, ARMv6 + VFPv2): 32-bit only",
        "raspberrypi.com documentation (Processors: BCM2835) and Raspberry Pi OS /proc/cpuinfo",
        _arm("0xb76", "7", "half thumb fastmult vfp edsp java tls", "ARMv6-compatible processor rev 7 (v6l)"),
        {"arm": ("v6", ("v7", "unsupported-cpu"))}),
    CatalogueEntry(
        "pi2", "Raspberry Pi 2 v1.1 (BCM2836, Cortex-A7, ARMv7 + NEON + VFPv4): 32-bit only",
        "raspberrypi.com documentation (Processors: BCM2836) and Raspberry Pi OS /proc/cpuinfo",
        _arm("0xc07", "7", "half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae evtstrm",
             "ARMv7 Processor rev 5 (v7l)"),
        {"arm": ("v7", None)}),
    CatalogueEntry(
        "pi3", "Raspberry Pi 3 (BCM2837, Cortex-A53, ARMv8.0, no crypto): 64-bit and 32-bit userlands",
        "raspberrypi.com documentation (Processors: BCM2837) and Raspberry Pi OS (64-bit) /proc/cpuinfo",
        _arm("0xd03", "8", "fp asimd evtstrm crc32 cpuid"),
        {"arm64": ("v8.0", ("v8.1", "unsupported-cpu")), "arm": ("v7", None)}),
    CatalogueEntry(
        "pi4", "Raspberry Pi 4 (BCM2711, Cortex-A72, ARMv8.0, no crypto): 64-bit and 32-bit userlands",
        "raspberrypi.com documentation (Processors: BCM2711) and Raspberry Pi OS (64-bit) /proc/cpuinfo",
        _arm("0xd08", "8", "fp asimd evtstrm crc32 cpuid"),
        {"arm64": ("v8.0", ("v8.1", "unsupported-cpu")), "arm": ("v7", None)}),
    CatalogueEntry(
        "pi5", "Raspberry Pi 5 (BCM2712, Cortex-A76, ARMv8.2 with crypto): 64-bit and 32-bit userlands",
        "raspberrypi.com documentation (Processors: BCM2712) and Raspberry Pi OS (64-bit) /proc/cpuinfo",
        _arm("0xd0b", "8", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
             "dcpop asimddp"),
        {"arm64": ("v8.1", None), "arm": ("v7", None)}),
    CatalogueEntry(
        "power8", "an IBM POWER8 host (S822L, Power Systems E850)", "IBM POWER8 processor user's manual; "
        "Linux /proc/cpuinfo of a POWER8 LPAR",
        "processor\t: 0\ncpu\t\t: POWER8E (raw), altivec supported\nclock\t\t: 3690.000000MHz\n"
        "revision\t: 2.1 (pvr 004b 0201)\nplatform\t: pSeries\n",
        {"ppc64le": ("power8", ("power9", "unsupported-cpu"))}),
    CatalogueEntry(
        "power9", "an IBM POWER9 host (AC922, Talos II)", "IBM POWER9 processor user's manual; "
        "Linux /proc/cpuinfo of a Talos II",
        "processor\t: 0\ncpu\t\t: POWER9, altivec supported\nclock\t\t: 3800.000000MHz\n"
        "revision\t: 2.2 (pvr 004e 1202)\nplatform\t: PowerNV\n",
        {"ppc64le": ("power9", ("power10", "unsupported-cpu"))}),
    CatalogueEntry(
        "hifive-unmatched", "SiFive HiFive Unmatched (FU740, U74 cores): RVA20 (rv64gc), no Zba/Zbb",
        "SiFive FU740-C000 manual (U74: RV64GC) and Linux /proc/cpuinfo of a HiFive Unmatched",
        "processor\t: 0\nhart\t\t: 1\nisa\t\t: rv64imafdc\nmmu\t\t: sv39\nuarch\t\t: sifive,u74-mc\n",
        {"riscv64": ("rva20u64", ("rva22u64", "unsupported-cpu"))}),
    CatalogueEntry(
        "visionfive2", "StarFive VisionFive 2 (JH7110, U74 with Zba/Zbb): what Go's rva22u64 needs, no V",
        "StarFive JH7110 datasheet (U74: RV64GC_Zba_Zbb) and Linux /proc/cpuinfo of a VisionFive 2",
        "processor\t: 0\nhart\t\t: 1\nisa\t\t: rv64imafdc_zicntr_zicsr_zifencei_zihpm_zba_zbb\nmmu\t\t: sv39\n"
        "uarch\t\t: sifive,u74-mc\n",
        {"riscv64": ("rva22u64", None)}),
    CatalogueEntry(
        "z14", "IBM z14 (vector-enhancements facility 1)", "IBM z/Architecture Principles of Operation "
        "(facility bits 129, 135) and Linux /proc/cpuinfo of a z14 LPAR",
        "vendor_id       : IBM/S390\n# processors    : 1\nfeatures\t: esan3 zarch stfle msa ldisp eimm dfp edat "
        "etf3eh highgprs te vx vxd vxe gs sie\nprocessor 0: version = FF,  identification = 0123456, "
        "machine = 3906\n",
        {"s390x": ("", None)}),
)
CATALOGUE: Mapping[str, CatalogueEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


@functools.cache
def catalogue_machine(name: str) -> Machine:
    e = CATALOGUE[name]
    return parse_cpuinfo(e.cpuinfo, f"catalogue:{name}")


@functools.cache
def _resolved(name: str) -> tuple[tuple[str, Resolved], ...]:
    return tuple(resolve_machine(catalogue_machine(name)).items())


def resolved_catalogue(name: str) -> dict[str, Resolved]:
    """A catalogue machine as qemu CPUs per arch (from xarch's model tables: no emulator is asked)."""
    return dict(_resolved(name))
