"""Issue 15, prebuilt artifacts: a target with `artifact: PATH` is not built; it is checked against the
target and run like a built one, and a program not built by Go gets verdicts from its own evidence."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e


@pytest.fixture
def haswell_c(tmp_path):
    if shutil.which("gcc") is None:
        pytest.skip("needs the host C compiler: apt-get install gcc libc6-dev (scripts/setup installs it)")
    out = tmp_path / "haswellc"
    subprocess.run(["gcc", "-O2", "-g", "-static", "-march=haswell", "-o", str(out),
                    str(FIXTURES / "haswellc" / "sum.c")], check=True, capture_output=True, timeout=300)
    return out


def test_a_prebuilt_c_binary_for_haswell_is_unsupported_cpu_on_westmere(xrun_matrix, haswell_c):
    r = xrun_matrix(f"""
        name: haswellc
        targets: [{{target: linux/amd64, artifact: {haswell_c}}}]
        profiles: [{{name: westmere-vm, cpu: {{amd64: Westmere}}}}, {{name: haswell, cpu: {{amd64: Haswell}}}}]
        run: {{args: [], expect: {{stdout: "^haswellc ok"}}}}
    """)
    b = r.report["builds"][0]
    assert b["verdict"] == "ok" and b["cached"], b      # checked, never built
    c = r.cell("linux/amd64:scratch:westmere-vm")
    assert c["verdict"] == "unsupported-cpu", c
    f = c["evidence"]["fault"]
    assert (f["source"], f["origin"], f["extension"], f["model_has_extension"]) == ("core-dump", "native", "AVX", False)
    assert f["symbol"] in ("main", "sum8") and f["location"].startswith("sum.c:"), f
    assert "a program not built by Go" in c["explanation"] and "-march=x86-64-v2 runs on Westmere" in c["fix"]
    assert r.cell("linux/amd64:scratch:haswell")["verdict"] == "ok"


def test_a_prebuilt_artifact_for_another_arch_is_an_artifact_mismatch(xrun_matrix, haswell_c):
    r = xrun_matrix(f"""
        name: wrongarch
        targets: [{{target: linux/arm64, artifact: {haswell_c}}}]
        run: {{args: []}}
    """)
    b = r.report["builds"][0]
    assert b["verdict"] == "artifact-mismatch", b
    assert "x86" in (b["explanation"] or "").lower() or "amd64" in (b["explanation"] or ""), b


def test_a_missing_prebuilt_artifact_is_a_matrix_error(xrun_matrix, tmp_path):
    r = xrun_matrix("""
        name: missing
        targets:
          - {target: linux/arm64, artifact: dist/nothing-here}
    """)
    assert r.rc == 2, r.out + r.err
    assert "targets[0].artifact" in r.err and "no such file" in r.err and "Traceback" not in r.err


def _zig_c(tmp_path, target: str, name: str):
    """A static C program for `target`, compiled with zig (a dependency of the test extras)."""
    pytest.importorskip("ziglang")
    import sys
    src = tmp_path / f"{name}.c"
    src.write_text('#include <stdio.h>\nint main(void){puts("float ok");return 0;}\n')
    out = tmp_path / name
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", target, "-static", "-O1", "-o", str(out),
                    str(src)], check=True, capture_output=True, timeout=600)
    return out


def test_a_hard_float_arm_binary_is_a_mismatch_for_armv5_and_runs_on_armv7(xrun_matrix, tmp_path):
    hard = _zig_c(tmp_path, "arm-linux-musleabihf", "hardfloat")
    r = xrun_matrix(f"""
        name: floatabi
        targets: [{{target: linux/arm/v5, artifact: {hard}}}, {{target: linux/arm/v7, artifact: {hard}}}]
        run: {{args: [], expect: {{stdout: "float ok"}}}}
    """)
    v5, v7 = r.report["builds"]
    assert v5["verdict"] == "artifact-mismatch", v5
    assert "hard-float ABI" in v5["explanation"] and "armel" in v5["explanation"], v5
    assert "-mfloat-abi=soft" in v5["fix"]
    assert v7["verdict"] == "ok", v7
    assert r.cell("linux/arm/v7:scratch:baseline")["verdict"] == "ok"


def test_an_elf_for_another_os_abi_is_a_mismatch(xrun_matrix, tmp_path, haswell_c):
    other = tmp_path / "freebsd-abi"
    data = bytearray(haswell_c.read_bytes())
    data[7] = 9                                  # EI_OSABI = ELFOSABI_FREEBSD: what a FreeBSD build carries
    other.write_bytes(bytes(data))
    other.chmod(0o755)
    r = xrun_matrix(f"""
        name: osabi
        targets: [{{target: linux/amd64, artifact: {other}}}]
        run: {{args: []}}
    """)
    b = r.report["builds"][0]
    assert b["verdict"] == "artifact-mismatch", b
    assert "OS ABI is FREEBSD" in b["explanation"], b
