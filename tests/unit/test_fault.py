"""The faulting instruction, from the Go runtime's fatal-signal report: decoded, attributed, and deciding."""

from __future__ import annotations

import json

import pytest
from test_classify import cell, ev, facts, verdict

from conftest import FIXTURES
from xarch import platforms
from xarch.binfmt.elfcore import read_core
from xarch.forensics import go_report
from xarch.forensics.decode import decode
from xarch.model import Fault

CORES = FIXTURES / "cores"

# recorded: tests/fixtures/avxasm (GOAMD64=v1) under qemu-x86_64 -cpu Westmere, trimmed
GO_SIGILL = """SIGILL: illegal instruction
PC=0x499e60 m=0 sigcode=2
instruction bytes: 0xc5 0xfd 0xef 0xc0 0xc3 0xcc 0xcc 0xcc 0xcc 0xcc 0xcc 0xcc 0xcc 0xcc 0xcc 0xcc

goroutine 1 gp=0x12cbc1ce41e0 m=0 mp=0x5743a0 [running]:
main.useAVX()
\t/src/avxasm/avx_amd64.s:4 fp=0x12cbc1d8ee70 sp=0x12cbc1d8ee68 pc=0x499e60
main.main()
\t/src/avxasm/main.go:10 +0x13 fp=0x12cbc1d8eeb8 sp=0x12cbc1d8ee70 pc=0x499df3
"""


def test_the_report_is_parsed_and_decoded():
    sig, pc, code, func, loc = go_report(GO_SIGILL)
    assert (sig, pc, func, loc) == ("SIGILL", 0x499e60, "main.useAVX", "/src/avxasm/avx_amd64.s:4")
    assert decode("amd64", code, pc) == ("vpxor ymm0, ymm0, ymm0", "AVX2")


def test_a_signal_panic_gives_the_pc_but_not_the_panic_frames():
    text = ("panic: runtime error: invalid memory address or nil pointer dereference\n"
            "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x48f1a2]\n\ngoroutine 1 [running]:\n"
            "panic({0x4a0b20?, 0x5436f0?})\n\t/usr/lib/go/src/runtime/panic.go:785 +0x132\n")
    assert go_report(text) == ("SIGSEGV", 0x48f1a2, b"", None, None)


@pytest.mark.parametrize(("goarch", "hexbytes", "insn", "ext"), [
    ("amd64", "c4e2f9f7c0", "shlx rax, rax, rax", "BMI2"),
    ("amd64", "62f1fe487f06", "vmovdqu64 zmmword ptr [rsi], zmm0", "AVX-512F"),
    ("amd64", "f3480fb8c0", "popcnt rax, rax", "POPCNT"),           # capstone groups it nowhere
    ("arm", "000ab7ee", "vmov.f32 s0, #1.000000e+00", "VFPv3"),     # GOARM=7's runtime.check
    ("arm", "7450efe6", "uxtb r5, r4", "ARMv6"),                     # GOARM=6's first v6 instruction
    ("arm", "5bf07ff5", "dmb ish", "ARMv7"),
    ("arm64", "83fcfb88", "casal w27, w3, [x4]", "LSE"),             # GOARM64=v8.1, ungrouped in capstone
    ("ppc64le", "6601077c", "mtvsrd f0, r7", "POWER8"),
    ("riscv64", "d38404f2", "fmv.d.x fs1, s1", "D"),
    ("riscv64", "3325b520", "sh1add (0x20b52533)", "Zba"),           # capstone 5 cannot decode Zba
    ("mips64le", "0000a144", "dmtc1 $at, $f0", "FPU"),
])
def test_decode_names_the_extension_on_every_arch(goarch, hexbytes, insn, ext):
    assert decode(goarch, bytes.fromhex(hexbytes), 0x1000) == (insn, ext)


def test_decode_says_nothing_for_no_bytes():
    assert decode("amd64", b"", 0) == (None, None)
    assert decode("wasm", b"\x00", 0) == (None, None)


def test_no_report_no_fault():
    assert go_report("qemu: uncaught target signal 4 (Illegal instruction) - core dumped\n") is None


@pytest.mark.parametrize("goarch", sorted(json.loads((CORES / "cores.json").read_text())))
def test_recorded_guest_cores_give_the_pc_for_every_register_layout(goarch):
    """Cores recorded from real qemu runs (tests/fixtures/cores/record.py): at record time the PC was
    in runtime.raise (GOTRACEBACK=crash re-raises SIGABRT) according to `go tool addr2line`."""
    want = json.loads((CORES / "cores.json").read_text())[goarch]
    info = read_core(CORES / f"{goarch}.core")
    assert info is not None
    assert (info.signal, f"{info.pc:#x}") == (want["signal"], want["pc"])


def test_a_core_cut_before_its_notes_or_junk_reads_as_nothing(tmp_path):
    cut = tmp_path / "cut.core"
    cut.write_bytes((CORES / "amd64.core").read_bytes()[:200])
    assert read_core(cut) is None
    (tmp_path / "junk").write_bytes(b"\x7fELF" + b"\xff" * 100)
    assert read_core(tmp_path / "junk") is None
    assert read_core(tmp_path / "absent") is None


def _fault(c, sig="SIGILL", **kw):
    have = platforms.model_extensions(c.target.arch, c.cpu)
    ext = kw.get("extension")
    return Fault(signal=sig, pc=0x75b54, model=c.cpu, model_has_extension=None if ext is None else ext in have, **kw)


def test_go_runtime_instruction_from_a_core_is_the_level_and_names_it():
    c = cell("linux/arm/v7", "arm1176", "pi-zero")
    f = _fault(c, source="core-dump", instruction="vmov.f32 s0, #1.000000e+00", extension="VFPv3",
               symbol="runtime.check", location="runtime/runtime1.go:155", origin="go-runtime")
    v = verdict(c, ev(c, facts("arm", "GOARM", "7"), signal=4, fault=f))
    assert v.verdict == "unsupported-cpu"
    assert ("SIGILL at 0x75b54 in runtime.check (runtime/runtime1.go:155): vmov.f32 s0, #1.000000e+00 needs "
            "VFPv3; arm1176 has no VFPv3") in v.explanation
    assert "GOARM=6" in v.fix


def test_an_extension_the_model_has_but_tcg_lacks_is_the_emulators_fault():
    c = cell("linux/amd64", "Skylake-Server", "avx512-box")
    f = _fault(c, source="go-panic", instruction="vmovdqu64 zmmword ptr [rsi], zmm0", extension="AVX-512F",
               symbol="main.sum", location="sum_amd64.s:5", origin="go-asm")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=2, stderr=GO_SIGILL, fault=f))
    assert v.verdict == "emulation-unsupported", v
    assert "Skylake-Server has AVX-512F on real hardware" in v.explanation
    assert "TCG cannot execute AVX-512F" in v.explanation


def test_without_a_pc_the_level_decides_and_says_so():
    c = cell("linux/amd64/v3", "Nehalem", "x86-64-v2-vm")
    msg = "This program can only be run on AMD64 processors with v3 microarchitecture support.\n"
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v3"), exit_code=1, stderr=msg))
    assert v.verdict == "unsupported-cpu"
    assert "lacks AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, XSAVE" in v.explanation
    assert "No faulting instruction could be read" in v.explanation
    c4 = cell("linux/amd64/v4", "Skylake-Server", "avx512-box")
    msg4 = msg.replace("v3", "v4")
    v4 = verdict(c4, ev(c4, facts("amd64", "GOAMD64", "v4"), exit_code=1, stderr=msg4))
    assert v4.verdict == "emulation-unsupported" and "cannot provide AVX-512F" in v4.explanation


def test_model_feature_changes_count():
    assert "AVX" in platforms.model_extensions("amd64", "Westmere,+avx")
    assert "AVX2" not in platforms.model_extensions("amd64", "Haswell,-avx2")
    assert platforms.model_extensions("amd64", "NoSuchCPU") is None


def test_go_assembly_without_a_cpu_check_is_the_binarys_fault():
    """A v1 binary whose Go assembly uses AVX2, on Westmere: unsupported-cpu naming the instruction
    and the function (xrun used to blame the emulator, since v1 <= Westmere's level)."""
    c = cell("linux/amd64", "Westmere", "westmere-vm")
    f = _fault(c, source="go-panic", instruction="vpxor ymm0, ymm0, ymm0", extension="AVX2", symbol="main.useAVX",
               location="/src/avxasm/avx_amd64.s:4", origin="go-asm")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=2, stderr=GO_SIGILL, fault=f))
    assert v.verdict == "unsupported-cpu", v
    assert ("in main.useAVX (/src/avxasm/avx_amd64.s:4): vpxor ymm0, ymm0, ymm0 needs AVX2; Westmere has no AVX2"
            in v.explanation)
    assert "the binary, not the emulator, is at fault" in v.explanation
    assert "golang.org/x/sys/cpu" in v.fix and "main.useAVX" in v.fix
