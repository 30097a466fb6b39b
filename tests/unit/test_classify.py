"""classify() from recorded evidence: the exact texts of ../shared/reference/failure-signatures.md."""

from __future__ import annotations

import pytest

from xarch.artifact import ArtifactFacts
from xarch.buildinfo import GoBuildInfo
from xarch.classify import classify
from xarch.engines import Evidence
from xarch.plan import Cell, Expect, Profile, Target


def _bi(**settings: str) -> GoBuildInfo:
    return GoBuildInfo("go1.27.3", "example.com/x", "example.com/x", "(devel)", dict(settings), (), "")


def cell(spec: str = "linux/arm/v7", cpu: str = "arm1176", profile: str = "pi-zero", image: str = "scratch",
         xfail: str | None = None) -> Cell:
    parts = spec.split("/")
    t = Target(spec, parts[0], parts[1], parts[2] if len(parts) > 2 else None)
    return Cell(t, image, Profile(profile, builtin=True), cpu, (), {}, xfail)


def facts(goarch: str = "arm", level_var: str = "GOARM", level: str = "7", interp: str | None = None,
          **settings: str) -> ArtifactFacts:
    machine = {"arm": "EM_ARM", "amd64": "EM_X86_64", "arm64": "EM_AARCH64"}[goarch]
    cls = 32 if goarch == "arm" else 64
    return ArtifactFacts("/x", "elf", 1, machine, cls, "little", "ELFOSABI_SYSV", 0, interp, (), None, goarch,
                         _bi(GOOS="linux", GOARCH=goarch, **{level_var: level}, **settings))


def ev(c: Cell, f: ArtifactFacts, **kw: object) -> Evidence:
    return Evidence(c.id, c.cpu or "native", f, ran=kw.pop("ran", True), **kw)  # type: ignore[arg-type]


NO_EXPECTATION = Expect(0, None)


def verdict(c: Cell, e: Evidence, expect: Expect = NO_EXPECTATION):
    return classify(c, e, expect, 60)


def test_ok_and_exit_status_and_wrong_output():
    c = cell("linux/arm64", "cortex-a53", "baseline")
    f = facts("arm64", "GOARM64", "v8.0")
    assert verdict(c, ev(c, f, exit_code=0, stdout="hi\n")).verdict == "ok"
    v = verdict(c, ev(c, f, exit_code=3, stderr="boom\n"))
    assert v.verdict == "exit-status" and "status 3, expected 0" in v.explanation and "boom" in v.explanation
    v = verdict(c, ev(c, f, exit_code=0, stdout="bye\n"), Expect(0, "^hi"))
    assert v.verdict == "wrong-output" and "bye" in v.explanation


def test_raw_sigill_is_unsupported_cpu_with_the_variant_fix():
    c = cell()
    v = verdict(c, ev(c, facts(), signal=4, stderr="qemu: uncaught target signal 4 (Illegal instruction) - core dumped\n"))
    assert v.verdict == "unsupported-cpu"
    assert "GOARM=7" in v.explanation and "arm1176" in v.explanation
    assert "linux/arm/v6 (GOARM=6)" in v.fix


def test_riscv_sigill_has_no_qemu_message():
    c = cell("linux/riscv64/rva22u64", "sifive-u54", "baseline")
    f = ArtifactFacts("/x", "elf", 1, "EM_RISCV", 64, "little", None, 0, None, (), None, "riscv64",
                      _bi(GORISCV64="rva22u64"))
    v = verdict(c, ev(c, f, signal=4, stderr=""))
    assert v.verdict == "unsupported-cpu" and "no message" in v.explanation
    assert "linux/riscv64/rva20u64" in v.fix


def test_go_amd64_level_message():
    c = cell("linux/amd64/v3", "Westmere", "westmere-vm")
    msg = "This program can only be run on AMD64 processors with v3 microarchitecture support.\n"
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v3"), exit_code=1, stderr=msg))
    assert v.verdict == "unsupported-cpu"
    assert "v3 microarchitecture" in v.explanation and "GOAMD64=v2" in v.fix


def test_go_sigill_panic_is_unsupported_cpu():
    c = cell("linux/arm64/v8.1", "cortex-a53", "baseline")
    err = "SIGILL: illegal instruction\nPC=0x4 m=0 sigcode=1\n\ngoroutine 1 [running]:\n"
    v = verdict(c, ev(c, facts("arm64", "GOARM64", "v8.1"), exit_code=2, stderr=err))
    assert v.verdict == "unsupported-cpu" and "SIGILL: illegal instruction" in v.explanation


def test_level_the_model_claims_but_tcg_lacks_is_emulation_unsupported():
    c = cell("linux/amd64/v4", "Skylake-Server", "baseline")
    msg = "This program can only be run on AMD64 processors with v4 microarchitecture support.\n"
    e = ev(c, facts("amd64", "GOAMD64", "v4"), exit_code=1, stderr=msg,
           tcg_missing=("CPUID.07H:EBX.avx512f [bit 16]",))
    v = verdict(c, e)
    assert v.verdict == "emulation-unsupported"
    assert "avx512f" in v.explanation and "not the binary" in v.explanation


@pytest.mark.parametrize("stderr", [
    "qemu-s390x-static: Some features requested in the CPU model are not available in the configuration: klmd-sha-1\n",
    "qemu-arm-static: unable to find CPU model 'cortex-a53'\n",
])
def test_emulator_refusing_the_model_is_emulation_unsupported(stderr):
    c = cell("linux/arm/v7", "cortex-a53", "pi3")
    assert verdict(c, ev(c, facts(), exit_code=1, stderr=stderr)).verdict == "emulation-unsupported"


def test_s390x_z900_no_fpu_is_unsupported_cpu():
    c = cell("linux/s390x", "z900-base", "old")
    f = ArtifactFacts("/x", "elf", 1, "EM_S390", 64, "big", None, 0, None, (), None, "s390x", _bi())
    err = "runtime: This CPU has no floating point hardware, so this program cannot be run. \n"
    assert verdict(c, ev(c, f, exit_code=1, stderr=err)).verdict == "unsupported-cpu"


def test_qemu_invalid_elf_is_exec_format_error():
    c = cell("linux/arm64", "cortex-a53", "baseline")
    f = facts("amd64", "GOAMD64", "v1")
    v = verdict(c, ev(c, f, exit_code=255, stderr="qemu-aarch64-static: /app: Invalid ELF image for this architecture\n"))
    assert v.verdict == "exec-format-error" and "GOARCH=arm64" in v.fix


def test_static_loader_check_and_qemu_loader_message_are_missing_loader():
    c = cell("linux/arm64", "cortex-a53", "baseline")
    f = facts("arm64", "GOARM64", "v8.0", interp="/lib/ld-linux-aarch64.so.1", CGO_ENABLED="1")
    v = verdict(c, ev(c, f, ran=False, loader_missing="/lib/ld-linux-aarch64.so.1"))
    assert v.verdict == "missing-loader" and "CGO_ENABLED=0" in v.fix and "distroless-base" in v.fix
    err = "qemu-aarch64-static: Could not open '/lib/ld-musl-aarch64.so.1': No such file or directory\n"
    f2 = facts("arm64", "GOARM64", "v8.0", interp="/lib/ld-musl-aarch64.so.1")
    v = verdict(c, ev(c, f2, exit_code=255, stderr=err))
    assert v.verdict == "missing-loader" and "alpine" in v.fix


@pytest.mark.parametrize(("stderr", "code", "needle"), [
    ("/app: error while loading shared libraries: libfoo.so.1: cannot open shared object file: No such file or directory\n",
     127, "libfoo.so.1"),
    ("Error loading shared library libfoo.so.1: No such file or directory (needed by /app)\n"
     "Error relocating /app: foo: symbol not found\n", 127, "libfoo.so.1"),
    ("/app: /lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /app)\n", 1, "GLIBC_2.38"),
])
def test_missing_library(stderr, code, needle):
    c = cell("linux/amd64", "qemu64", "baseline", image="distroless-base")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1"), exit_code=code, stderr=stderr))
    assert v.verdict == "missing-library" and needle in v.explanation + v.fix


def test_crash_signal_and_go_panic():
    c = cell("linux/arm64", "cortex-a53", "baseline")
    f = facts("arm64", "GOARM64", "v8.0")
    v = verdict(c, ev(c, f, signal=11, stderr="qemu: uncaught target signal 11 (Segmentation fault)\n"))
    assert v.verdict == "crashed" and "SIGSEGV" in v.explanation
    err = ("panic: runtime error: invalid memory address or nil pointer dereference\n"
           "[signal SIGSEGV: segmentation violation code=0x1 addr=0x0 pc=0x9a3f4]\n\ngoroutine 1 [running]:\n"
           "main.main()\n\t/src/main.go:12 +0x24\n")
    v = verdict(c, ev(c, f, exit_code=2, stderr=err))
    assert v.verdict == "crashed" and "nil pointer dereference" in v.explanation


def test_sigpipe_is_output_closed_early_not_a_crash():
    # recorded: a Go program piping its stdout into `sh -c "head -n 3"` (tests/fixtures/stdio pager)
    c = cell("linux/arm64", "cortex-a53", "baseline", image="alpine")
    v = verdict(c, ev(c, facts("arm64", "GOARM64", "v8.0"), signal=13, stdout="line 0\nline 1\nline 2\n"))
    assert v.verdict == "exit-status", v
    assert "killed by SIGPIPE" in v.explanation and "expected exit 0" in v.explanation
    assert "pipe whose reader had already exited" in v.explanation and "`| head`" in v.explanation
    assert "this is not a crash" in v.explanation and "line 2" in v.explanation
    assert "memory corruption" not in v.fix and "`| sed -n 1,3p`" in v.fix and "signal.Ignore(syscall.SIGPIPE)" in v.fix


def test_timeout_beats_everything_else():
    c = cell("linux/arm64", "cortex-a53", "baseline")
    v = verdict(c, ev(c, facts("arm64", "GOARM64", "v8.0"), signal=9, timed_out=True, stdout="tick\n"))
    assert v.verdict == "timeout" and "60s" in v.explanation and "tick" in v.explanation


def test_infra_and_not_runnable():
    c = cell("linux/arm64", "cortex-a53", "baseline")
    v = verdict(c, ev(c, facts("arm64", "GOARM64", "v8.0"), ran=False, infra="qemu-aarch64-static missing",
                      infra_fix="apt-get install qemu-user-static"))
    assert v.verdict == "infra-error" and "apt-get" in v.fix
    d = cell("darwin/arm64", "", "none", image="none")
    assert verdict(d, ev(d, facts("arm64", "GOARM64", "v8.0"), ran=False)).verdict == "not-runnable"


@pytest.mark.parametrize(("stderr", "needle"), [
    ("tls: failed to verify certificate: x509: certificate signed by unknown authority", "CA bundle"),
    ("unknown time zone Europe/Berlin", "timetzdata"),
    ("user: Current requires cgo or $USER set in environment", "/etc/passwd"),
])
def test_scratch_semantics_keep_the_verdict_and_name_the_file(stderr, needle):
    c = cell("linux/arm64", "cortex-a53", "baseline")
    v = verdict(c, ev(c, facts("arm64", "GOARM64", "v8.0"), exit_code=1, stderr=stderr + "\n"))
    assert v.verdict == "exit-status" and needle in v.fix


def test_explain_predicts_the_fix_the_verdict_gives():
    """explain and classify take their fix texts from classify.advice: the same words for the same cause."""
    from xarch import platforms
    from xarch.classify import advice

    c = cell("linux/arm/v7", "arm1176", "pi-zero")
    v = verdict(c, ev(c, facts(), signal=4, stderr="qemu: uncaught target signal 4 (Illegal instruction)"))
    assert v.verdict == "unsupported-cpu"
    assert v.fix.startswith(advice.build_for_model("pi-zero", "arm1176", "linux", platforms.arch("arm"), "v6"))
    c = cell("linux/amd64", "qemu64", "baseline")
    v = verdict(c, ev(c, facts("amd64", "GOAMD64", "v1", interp="/lib64/ld-linux-x86-64.so.2", CGO_ENABLED="1"),
                      ran=False, loader_missing="/lib64/ld-linux-x86-64.so.2"))
    assert v.verdict == "missing-loader"
    assert v.fix == advice.loader_fix("/lib64/ld-linux-x86-64.so.2", True, False, "distroless-base (glibc)")
