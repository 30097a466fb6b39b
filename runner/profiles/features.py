"""CPU features as data: /proc/cpuinfo's names, the extension names xarch reports, qemu's toggles.

A machine is described by the extensions it has, in the names of `platforms.MODEL_EXTENSIONS` (what
compilers and Go's runtime choose code by: AVX2, LSE, Zba, ...). Per arch this module says:

- which /proc/cpuinfo flag stands for which extension (`FLAGS`), and what each extension needs first
  (`NEEDS`: the kernel never lists AVX without XSAVE, a qemu model given +avx without +xsave runs
  code that Go's runtime then refuses to use);
- how qemu-user turns an extension on or off after the model name (`TOGGLES`): x86 takes `+avx` /
  `-avx`, riscv64 `zba=true|false`, s390x `vxeh=on|off`, aarch64 only `sve`/`pauth` on max and
  a64fx. What has no toggle is matched by choosing the model;
- which CPU parts (arm's `CPU part`) qemu has a model of (`PARTS`).

Extensions outside these tables (x86 `erms`, arm64 `jscvt`, ...) are not matched: nothing xarch's
tables say code depends on. Every value here was checked against qemu 7.2's `-cpu help` and by
running the toggled models (see tests/e2e/test_machine_profiles.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["EXTRA_EXTENSIONS", "FLAGS", "NEEDS", "PARTS", "TOGGLES", "baseline"]

_X86_FLAGS = {
    "pni": "SSE3", "ssse3": "SSSE3", "sse4_1": "SSE4.1", "sse4_2": "SSE4.2", "popcnt": "POPCNT", "cx16": "CX16",
    "aes": "AES-NI", "pclmulqdq": "PCLMULQDQ", "xsave": "XSAVE", "avx": "AVX", "f16c": "F16C", "fma": "FMA",
    "avx2": "AVX2", "bmi1": "BMI1", "bmi2": "BMI2", "movbe": "MOVBE", "abm": "LZCNT", "rdrand": "RDRAND",
    "rdseed": "RDSEED", "adx": "ADX", "sha_ni": "SHA", "avx512f": "AVX-512F", "fma4": "FMA4", "xop": "XOP",
    "sse4a": "SSE4a",
}
FLAGS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "amd64": _X86_FLAGS, "386": _X86_FLAGS,
    "arm64": {"asimd": "NEON", "aes": "ARMv8 crypto", "crc32": "CRC32", "atomics": "LSE", "asimdrdm": "RDM",
              "fphp": "FP16", "asimddp": "DotProd", "lrcpc": "RCPC", "sha3": "SHA3", "sm4": "SM4", "sve": "SVE",
              "sve2": "SVE2", "paca": "PAuth", "bti": "BTI", "uscat": "LSE2", "i8mm": "I8MM", "bf16": "BF16"},
    "arm": {"edsp": "ARMv5TE", "vfp": "VFPv2", "vfpv3": "VFPv3", "neon": "NEON", "vfpv4": "VFPv4", "idiva": "IDIV",
            "crc32": "CRC32", "aes": "ARMv8 crypto"},
    "riscv64": {"m": "M", "a": "A", "f": "F", "d": "D", "c": "C", "v": "V", "zba": "Zba", "zbb": "Zbb"},
    "s390x": {"vx": "vector facility (z13)", "vxe": "vector-enhancements facility 1 (z14)",
              "vxe2": "vector-enhancements facility 2 (z15)"},
})
# extensions a machine may have that no qemu model's table names (listed as not emulated when present)
EXTRA_EXTENSIONS: Mapping[str, frozenset[str]] = MappingProxyType({
    "arm64": frozenset({"LSE2", "I8MM", "BF16"}),
    "s390x": frozenset({"vector-enhancements facility 1 (z14)", "vector-enhancements facility 2 (z15)"}),
})
_X86_NEEDS = {"SSSE3": ("SSE3",), "SSE4.1": ("SSSE3",), "SSE4.2": ("SSE4.1",), "AVX": ("XSAVE", "SSE4.2"),
              "F16C": ("AVX",), "FMA": ("AVX",), "AVX2": ("AVX",), "AVX-512F": ("AVX2", "FMA"), "FMA4": ("AVX",),
              "XOP": ("AVX",)}
NEEDS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType({
    "amd64": _X86_NEEDS, "386": _X86_NEEDS,
    "arm64": {"SVE2": ("SVE",), "SVE": ("FP16",), "LSE2": ("LSE",), "DotProd": ("NEON",), "RDM": ("NEON",)},
    "arm": {"VFPv3": ("VFPv2",), "VFPv4": ("VFPv3",), "NEON": ("VFPv3",)},
    "riscv64": {"D": ("F",), "V": ("D",)},
    "s390x": {"vector-enhancements facility 1 (z14)": ("vector facility (z13)",),
              "vector-enhancements facility 2 (z15)": ("vector-enhancements facility 1 (z14)",)},
})
# extension -> (the "on" spelling, the "off" spelling) after the model; None: only some models take it
_X86_TOGGLES = {ext: (f"+{q}", f"-{q}") for ext, q in (
    ("SSE3", "pni"), ("SSSE3", "ssse3"), ("SSE4.1", "sse4.1"), ("SSE4.2", "sse4.2"), ("POPCNT", "popcnt"),
    ("CX16", "cx16"), ("AES-NI", "aes"), ("PCLMULQDQ", "pclmulqdq"), ("XSAVE", "xsave"), ("AVX", "avx"),
    ("F16C", "f16c"), ("FMA", "fma"), ("AVX2", "avx2"), ("BMI1", "bmi1"), ("BMI2", "bmi2"), ("MOVBE", "movbe"),
    ("LZCNT", "abm"), ("RDRAND", "rdrand"), ("RDSEED", "rdseed"), ("ADX", "adx"), ("SHA", "sha-ni"),
    ("FMA4", "fma4"), ("XOP", "xop"), ("SSE4a", "sse4a"))}
# AVX-512 is a family: v4 needs F, BW, CD, DQ and VL, so the toggle moves all five
_X86_TOGGLES["AVX-512F"] = ("+avx512f,+avx512bw,+avx512cd,+avx512dq,+avx512vl",
                            "-avx512f,-avx512bw,-avx512cd,-avx512dq,-avx512vl")
TOGGLES: Mapping[str, Mapping[str, tuple[str, str]]] = MappingProxyType({
    "amd64": _X86_TOGGLES, "386": _X86_TOGGLES,
    "riscv64": {"Zba": ("zba=true", "zba=false"), "Zbb": ("zbb=true", "zbb=false"), "V": ("v=true", "v=false"),
                "C": ("c=true", "c=false")},
    "s390x": {"vector-enhancements facility 1 (z14)": ("vxeh=on", "vxeh=off"),
              "vector-enhancements facility 2 (z15)": ("vxeh2=on", "vxeh2=off")},
})
# models whose only toggles are these (qemu 7.2: "Property 'neoverse-n1-arm-cpu.sve' not found" elsewhere)
MODEL_TOGGLES: Mapping[str, Mapping[str, Mapping[str, tuple[str, str]]]] = MappingProxyType({
    "arm64": {"max": {"SVE": ("sve=on", "sve=off"), "PAuth": ("pauth=on", "pauth=off")},
              "a64fx": {"SVE": ("sve=on", "sve=off")}},
})
# arm "CPU part" (with "CPU implementer" 0x41, Arm Ltd) -> the qemu model of that core
PARTS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "arm": {"0x926": "arm926", "0xb36": "arm1136", "0xb76": "arm1176", "0xb02": "arm11mpcore", "0xc07": "cortex-a7",
            "0xc08": "cortex-a8", "0xc09": "cortex-a9", "0xc0f": "cortex-a15"},
    "arm64": {"0xd04": "cortex-a35", "0xd03": "cortex-a53", "0xd07": "cortex-a57", "0xd08": "cortex-a72",
              "0xd0b": "cortex-a76", "0xd0c": "neoverse-n1"},
})
# what every CPU of the arch has, so a capture need not list it (and a model is never "missing" it)
_BASE = {"amd64": {"x87", "MMX", "CMOV", "SSE", "SSE2"}, "386": {"x87"}, "arm64": {"ARMv8.0"}, "arm": set(),
         "riscv64": set(), "s390x": set(), "ppc64le": {"VSX"}, "ppc64": {"VSX"}}


def baseline(goarch: str) -> frozenset[str]:
    return frozenset(_BASE.get(goarch, set()))
