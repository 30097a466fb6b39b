"""The faulting instruction, from the Go runtime's fatal-signal report: decoded, attributed, and deciding."""

from __future__ import annotations

from test_classify import cell, ev, facts, verdict

from xarch.classify.fault import decode, go_fault

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


def test_the_fault_is_decoded_and_attributed():
    f = go_fault(GO_SIGILL, "amd64")
    assert f is not None
    assert (f.signal, f.pc, f.instruction, f.extension) == ("ILL", 0x499e60, "vpxor ymm0, ymm0, ymm0", "AVX2")
    assert (f.function, f.where, f.origin) == ("main.useAVX", "/src/avxasm/avx_amd64.s:4", "go-assembly")


def test_decode_names_extensions_on_other_arches():
    assert decode("amd64", bytes.fromhex("c4e2f9f7c0"), 0)[1] == "BMI2"           # shlx
    assert decode("amd64", b"", 0) == (None, None)
    assert decode("mips64le", b"\x00\x00\x00\x00", 0) == (None, None)    # no decoder wired: says nothing


def test_no_report_no_fault():
    assert go_fault("qemu: uncaught target signal 4 (Illegal instruction) - core dumped\n", "arm") is None


def test_go_assembly_without_a_cpu_check_is_the_binarys_fault():
    """A v1 binary whose Go assembly uses AVX2, on Westmere: unsupported-cpu naming the instruction
    and the function (xrun used to blame the emulator, since v1 <= Westmere's level)."""
    c = cell("linux/amd64", "Westmere", "westmere-vm")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=2, stderr=GO_SIGILL))
    assert v.verdict == "unsupported-cpu", v
    assert "vpxor ymm0, ymm0, ymm0' (AVX2) in main.useAVX at /src/avxasm/avx_amd64.s:4" in v.explanation
    assert "the binary, not the emulator, is at fault" in v.explanation
    assert "golang.org/x/sys/cpu" in v.fix and "main.useAVX" in v.fix
