"""Issue 13 end to end: the faulting instruction, not the Go level, decides the CPU verdict; the
symbols a loader could not bind, and the image's C library, explain a missing-library verdict."""

from __future__ import annotations

import json

import pytest

from conftest import FIXTURES, run_xrun

pytestmark = pytest.mark.e2e


def test_go_assembly_using_avx2_on_westmere_is_unsupported_cpu_naming_the_instruction(xrun_matrix):
    r = xrun_matrix(f"""
        name: avxasm
        project: {FIXTURES / 'avxasm'}
        targets: [linux/amd64]
        profiles: [{{name: westmere-vm, cpu: {{amd64: Westmere}}}}, baseline]
        run: {{args: [], expect: {{stdout: "^avxasm ok"}}}}
    """)
    cell = r.cell("linux/amd64:scratch:westmere-vm")
    assert cell["verdict"] == "unsupported-cpu", cell["explanation"]
    assert "in main.useAVX (example.com/avxasm/avx_amd64.s:" in cell["explanation"]
    assert "vpxor ymm0, ymm0, ymm0 needs AVX2; Westmere has no AVX2" in cell["explanation"]
    assert "hand-written Go assembly" in cell["explanation"]
    f = _fault(cell)
    assert (f["source"], f["origin"], f["extension"], f["model_has_extension"]) == ("go-panic", "go-asm", "AVX2", False)
    assert "golang.org/x/sys/cpu" in cell["fix"]


def _fault(cell):
    f = (cell.get("evidence") or {}).get("fault")
    assert f, cell
    return f


def test_core_dump_names_goarm7_instruction_on_a_pi_zero(xrun_matrix, tmp_path):
    """GOARM=7 on an ARM1176: qemu only says "uncaught target signal 4"; the guest core xrun takes on a
    second, bounded run gives the PC, decoded as a VFPv3 instruction in runtime.check."""
    r = xrun_matrix("""
        name: goarm7
        targets: [linux/arm/v7, linux/arm/v6]
        profiles: [pi-zero, {name: armv5, cpu: {arm: arm926}}]
        run: {args: [hello]}
    """)
    c = r.cell("linux/arm/v7:scratch:pi-zero")
    assert c["verdict"] == "unsupported-cpu", c
    f = _fault(c)
    assert (f["source"], f["symbol"], f["origin"], f["extension"], f["model_has_extension"]) == (
        "core-dump", "runtime.check", "go-runtime", "VFPv3", False)
    assert f["instruction"].startswith("vmov.f32") and f["location"].startswith("runtime/runtime1.go:")
    assert "arm1176 has no VFPv3" in c["explanation"] and "GOARM=6" in c["fix"]
    # GOARM=6 on an ARMv5 core: the first ARMv6 instruction, in the runtime
    c6 = r.cell("linux/arm/v6:scratch:armv5")
    f6 = _fault(c6)
    assert c6["verdict"] == "unsupported-cpu" and f6["extension"] == "ARMv6" and f6["symbol"].startswith("runtime.")
    assert r.cell("linux/arm/v6:scratch:pi-zero")["verdict"] == "ok"
    # the core is read and removed: nothing is left in the cell's dirs, nor any host core of qemu
    assert not list(tmp_path.rglob("*core*")), list(tmp_path.rglob("*core*"))


def test_core_dump_on_ppc64le_and_qemu_log_on_riscv64(xrun_matrix):
    r = xrun_matrix("""
        name: oldcpus
        targets: [linux/ppc64le, linux/riscv64]
        profiles: [{name: old, cpu: {ppc64le: power7, riscv64: sifive-e51}}]
        run: {args: [hello]}
    """)
    p = r.cell("linux/ppc64le:scratch:old")
    fp = _fault(p)
    assert p["verdict"] == "unsupported-cpu", p
    assert (fp["extension"], fp["symbol"], fp["source"]) == ("POWER8", "runtime.check", "core-dump")
    assert fp["instruction"].startswith("mtvsrd")
    v = r.cell("linux/riscv64:scratch:old")
    fv = _fault(v)
    assert v["verdict"] == "unsupported-cpu", v
    assert (fv["extension"], fv["symbol"], fv["model_has_extension"]) == ("D", "runtime.check", False)
    assert fv["instruction"].startswith("fmv.d.x")


def test_go_levels_without_a_fault_are_decided_from_the_extension_tables(xrun_matrix):
    r = xrun_matrix("""
        name: levels
        targets: [linux/amd64/v3, linux/amd64/v4]
        profiles: [{name: nehalem, cpu: {amd64: Nehalem}}, {name: avx512, cpu: {amd64: Skylake-Server}}]
        exclude: [{target: linux/amd64/v4, profile: nehalem}, {target: linux/amd64/v3, profile: avx512}]
        run: {args: [hello]}
    """)
    v3 = r.cell("linux/amd64/v3:scratch:nehalem")
    assert v3["verdict"] == "unsupported-cpu", v3
    assert "lacks AVX, AVX2, BMI1, BMI2, F16C, FMA, LZCNT, MOVBE, XSAVE" in v3["explanation"]
    assert "No faulting instruction could be read" in v3["explanation"]
    v4 = r.cell("linux/amd64/v4:scratch:avx512")
    assert v4["verdict"] == "emulation-unsupported", v4
    assert "cannot provide AVX-512F" in v4["explanation"]


def test_cgo_c_compiled_with_mavx2_on_westmere_is_the_binarys_fault(xrun_matrix):
    r = xrun_matrix(f"""
        name: avx2c
        project: {FIXTURES / 'avx2c'}
        targets: [{{target: linux/amd64, env: {{CGO_ENABLED: "1"}}}}]
        images: [distroless-base]
        profiles: [{{name: westmere-vm, cpu: {{amd64: Westmere}}}}, {{name: haswell, cpu: {{amd64: Haswell}}}}]
        run: {{args: [], expect: {{stdout: "^avx2c ok"}}}}
    """)
    c = r.cell("linux/amd64:distroless-base:westmere-vm")
    f = _fault(c)
    assert c["verdict"] == "unsupported-cpu", c
    # -mavx2 code starts with a VEX ymm load, which is AVX (Westmere has neither)
    assert (f["origin"], f["symbol"], f["extension"], f["model_has_extension"]) == ("cgo-c", "sum8", "AVX", False)
    assert f["instruction"].startswith("vmovdqu ymm"), f
    # DWARF's line for the faulting PC: sum.c, or the AVX intrinsic inlined there from the compiler's header
    assert f["location"] and f["location"].rsplit("/", 1)[-1].split(":")[0] in ("sum.c", "avxintrin.h"), f
    assert "CGO_CFLAGS" in c["fix"] and "sum8" in c["fix"]
    assert "the binary, not the emulator" in c["explanation"]
    assert r.cell("linux/amd64:distroless-base:haswell")["verdict"] == "ok"


@pytest.mark.parametrize("mode", ["pool", "container"])
def test_docker_engine_takes_the_guest_core_too(docker_daemon, xrun_matrix, mode):
    r = xrun_matrix("""
        name: goarm7docker
        targets: [linux/arm/v7, linux/riscv64]
        profiles: [{name: old, cpu: {arm: arm1176, riscv64: sifive-e51}}]
        run: {args: [hello]}
    """, "--engine", "docker", env={"XARCH_DOCKER_MODE": mode})
    c = r.cell("linux/arm/v7:scratch:old")
    f = _fault(c)
    assert c["verdict"] == "unsupported-cpu", c
    assert (f["source"], f["symbol"], f["extension"]) == ("core-dump", "runtime.check", "VFPv3")
    v = _fault(r.cell("linux/riscv64:scratch:old"))
    assert (v["symbol"], v["extension"]) == ("runtime.check", "D")


def test_explain_isa_lists_the_extensions_of_user_functions(xrun_matrix, tmp_path):
    r = xrun_matrix(f"""
        name: avxasm
        project: {FIXTURES / 'avxasm'}
        targets: [linux/amd64]
        run: {{args: []}}
    """)
    assert r.report["builds"][0]["verdict"] == "ok"
    artifact = next((tmp_path / "dist").glob("avxasm-*"))
    p = run_xrun(["explain", "--isa", str(artifact)])
    assert p.returncode == 0, p.stderr
    assert "main.useAVX: AVX2" in p.stdout
    assert "indexbytebody" not in p.stdout and "runtime." not in p.stdout.split("ISA extensions per function")[1]


_STRLCPY = f"""
    name: strlcpy
    project: {FIXTURES / 'strlcpy'}
    targets: [{{target: linux/arm64, cc: zig, libc: gnu.2.38, env: {{CGO_ENABLED: "1"}}}}]
    images: [distroless-base]
    run: {{args: [], expect: {{stdout: "^strlcpy ok"}}}}
"""


def _assert_strlcpy_on_glibc_236(cell):
    assert cell["verdict"] == "missing-library", cell
    ev = cell["evidence"]
    assert ev["symbols"] == [{"name": "strlcpy", "version": "GLIBC_2.38"}], ev
    assert ev["image_libc"] == "glibc 2.36", ev
    assert "distroless-base's glibc 2.36 is too old: strlcpy needs GLIBC_2.38" in cell["explanation"]
    # a program that needs C: build against the image's glibc and do without strlcpy, or a newer image
    assert "`cc: zig` with `libc: gnu.2.36`" in cell["fix"] and "replace strlcpy" in cell["fix"]
    assert "glibc >= 2.38" in cell["fix"]
    assert not cell["fix"].startswith("build with CGO_ENABLED=0"), cell["fix"]


def test_a_cgo_binary_linked_against_glibc_2_38_names_strlcpy_and_both_versions(xrun_matrix, tmp_path):
    """strlcpy came in glibc 2.38; distroless-base is Debian 12 (2.36): the report names the symbol that
    needs 2.38 (from the binary's version needs) and the glibc the image has (from its libc.so.6)."""
    r = xrun_matrix(_STRLCPY)
    _assert_strlcpy_on_glibc_236(r.cell("linux/arm64:distroless-base:baseline"))
    # xrun explain predicts the same before running
    artifact = next((tmp_path / "dist").glob("strlcpy-*"))
    p = run_xrun(["explain", "--json", "--image", "distroless-base", "--image", "alpine", str(artifact)])
    assert p.returncode == 0, p.stderr
    pred = {i["image"]: i for i in json.loads(p.stdout)["images"]}
    assert pred["distroless-base"]["verdict"] == "missing-library"
    assert pred["distroless-base"]["symbols"] == [{"name": "strlcpy", "version": "GLIBC_2.38"}]
    assert pred["distroless-base"]["image_libc"] == "glibc 2.36"
    assert "libc: gnu.2.36" in pred["distroless-base"]["fix"]
    assert pred["alpine"]["verdict"] == "missing-loader"


def test_the_docker_engine_names_the_unbound_symbol_too(docker_daemon, xrun_matrix):
    r = xrun_matrix(_STRLCPY, "--engine", "docker")
    _assert_strlcpy_on_glibc_236(r.cell("linux/arm64:distroless-base:baseline"))


def test_avx512_on_skylake_server_is_emulation_unsupported_proved_by_the_extension(xrun_matrix):
    """The same EVEX instruction is the emulator's fault on Skylake-Server (the model has AVX-512F, qemu's
    TCG cannot run it) and the binary's on Westmere (the model lacks it): the extension decides."""
    r = xrun_matrix(f"""
        name: avx512asm
        project: {FIXTURES / 'avx512asm'}
        targets: [linux/amd64]
        profiles: [{{name: skx, cpu: {{amd64: Skylake-Server}}}}, {{name: westmere-vm, cpu: {{amd64: Westmere}}}}]
        run: {{args: [], expect: {{stdout: "^avx512asm ok"}}}}
    """)
    skx, wsm = r.cell("linux/amd64:scratch:skx"), r.cell("linux/amd64:scratch:westmere-vm")
    for c, has in ((skx, True), (wsm, False)):
        f = _fault(c)
        assert (f["symbol"], f["origin"], f["extension"], f["model_has_extension"]) == \
            ("main.useAVX512", "go-asm", "AVX-512F", has), f
        assert f["instruction"].startswith("vpxord zmm0"), f
    assert skx["verdict"] == "emulation-unsupported", skx
    assert "Skylake-Server has AVX-512F on real hardware. qemu's TCG cannot execute AVX-512F" in skx["explanation"]
    assert wsm["verdict"] == "unsupported-cpu", wsm
    assert "cpu.X86.HasAVX512F" in wsm["fix"]
