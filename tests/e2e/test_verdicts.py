"""Every cell verdict of the walking skeleton, produced end to end from a real binary under real qemu."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, run_xrun

pytestmark = pytest.mark.e2e


def test_static_hello_is_ok_on_every_linux_target(xrun_matrix):
    targets = ["linux/amd64", "linux/amd64/v2", "linux/amd64/v3", "linux/386", "linux/arm/v5",
               "linux/arm/v6", "linux/arm/v7", "linux/arm64", "linux/ppc64le", "linux/s390x",
               "linux/riscv64", "linux/mips64le"]
    r = xrun_matrix(f"""
        name: probe
        targets: [{", ".join(targets)}]
        run: {{args: [hello], expect: {{exit: 0, stdout: "^probe hello$"}}}}
    """)
    assert r.rc == 0, r.out + r.err
    assert [b["verdict"] for b in r.report["builds"]] == ["ok"] * len(targets)
    cells = {c["id"]: c for c in r.report["cells"]}
    assert set(cells) == {f"{t}:scratch:baseline" for t in targets}
    for cid, c in cells.items():
        assert c["verdict"] == "ok", (cid, c)
        assert c["stdout"] == "probe hello\n"
    # the CPU model held: the oldest model each level claims, not qemu's capable default
    assert cells["linux/arm/v6:scratch:baseline"]["cpu"] == "arm1176"
    assert cells["linux/amd64:scratch:baseline"]["cpu"] == "qemu64"
    assert cells["linux/riscv64:scratch:baseline"]["cpu"] == "sifive-u54"
    # the 386 emulator work-around is on record, so an emulator bug is never blamed on the binary
    assert any("asyncpreemptoff=1" in n for n in cells["linux/386:scratch:baseline"]["evidence"]["notes"])
    assert r.report["summary"] == {"cells": 12, "ok": 12, "failed": 0, "xfail": 0, "builds_failed": 0,
                                   "planned_cells": 12, "not_runnable": 0}


def test_exit_status_and_wrong_output(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets: [linux/arm64]
        run: {args: [exit, "3"], expect: {exit: 0}}
    """)
    c = r.cell("linux/arm64:scratch:baseline")
    assert r.rc == 1
    assert c["verdict"] == "exit-status" and c["exit_code"] == 3
    assert "exited with status 3, expected 0" in c["explanation"]

    r = xrun_matrix("""
        name: probe
        targets: [linux/arm64]
        run: {args: [print, goodbye], expect: {exit: 0, stdout: "^hello"}}
    """)
    c = r.cell("linux/arm64:scratch:baseline")
    assert r.rc == 1
    assert c["verdict"] == "wrong-output"
    assert "'^hello'" in c["explanation"] and "goodbye" in c["explanation"]


def test_wrong_arch_artifact_is_exec_format_error(xrun_matrix):
    # the target's env overrides GOARCH: the build "succeeds" with an amd64 file for an arm64 target
    r = xrun_matrix("""
        name: probe
        targets:
          - {target: linux/arm64, env: {GOARCH: amd64}}
        profiles: [baseline]
        run: {args: [hello]}
    """)
    assert r.rc == 1
    b = r.build("linux/arm64")
    assert b["verdict"] == "artifact-mismatch"
    assert "EM_X86_64" in b["explanation"] and "EM_AARCH64" in b["explanation"]
    c = r.cell("linux/arm64:scratch:baseline")
    assert c["verdict"] == "exec-format-error"
    assert "Invalid ELF image" in c["explanation"]
    assert "GOARCH=arm64" in c["fix"]


def test_wrong_arch_artifact_on_the_native_profile(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets:
          - {target: linux/amd64, env: {GOARCH: arm64}}
        profiles: [host]
        run: {args: [hello]}
    """)
    c = r.cell("linux/amd64:scratch:host")
    assert c["verdict"] == "exec-format-error"
    assert "AARCH64" in c["explanation"]


@pytest.mark.parametrize("target", ["linux/arm64", "linux/amd64"])
def test_pie_binary_in_scratch_is_missing_loader(xrun_matrix, target):
    r = xrun_matrix(f"""
        name: probe
        targets: [{target}]
        build:
          command: [go, build, -buildmode=pie, -o, "{{{{ output }}}}", .]
          output: "@OUT@"
        run: {{args: [hello]}}
    """)
    assert r.build(target)["verdict"] == "ok"
    c = r.cell(f"{target}:scratch:baseline")
    assert c["verdict"] == "missing-loader", c
    assert "PT_INTERP" in c["explanation"] and "/lib" in c["explanation"]
    assert "-buildmode=pie" in c["fix"]


def test_cgo_binary_in_scratch_is_missing_loader(xrun_matrix):
    # CGO_ENABLED=1 for the host arch uses the host gcc: a glibc-dynamic binary (seed bug 2)
    r = xrun_matrix("""
        name: probe
        targets:
          - {target: linux/amd64, env: {CGO_ENABLED: "1"}}
        profiles: [baseline, host]
        run: {args: [hello]}
    """)
    for prof in ("baseline", "host"):
        c = r.cell(f"linux/amd64:scratch:{prof}")
        assert c["verdict"] == "missing-loader", c
        assert "/lib64/ld-linux-x86-64.so.2" in c["explanation"]
        assert "CGO_ENABLED=0" in c["fix"]


def test_goarm7_on_pi_zero_and_goarm6_on_arm926_are_unsupported_cpu(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets: [linux/arm/v7, linux/arm/v6]
        profiles: [pi-zero, {name: armv5-board, cpu: {arm: arm926}}]
        run: {args: [hello]}
    """)
    c = r.cell("linux/arm/v7:scratch:pi-zero")
    assert c["verdict"] == "unsupported-cpu"
    assert c["signal"] == 4
    assert "SIGILL" in c["explanation"] and "GOARM=7" in c["explanation"] and "arm1176" in c["explanation"]
    assert "linux/arm/v6" in c["fix"] and "GOARM=6" in c["fix"]
    assert r.cell("linux/arm/v6:scratch:pi-zero")["verdict"] == "ok"
    c = r.cell("linux/arm/v6:scratch:armv5-board")
    assert c["verdict"] == "unsupported-cpu"
    assert "linux/arm/v5" in c["fix"]


def test_goamd64_v3_on_westmere_is_unsupported_cpu(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets: [linux/amd64/v3]
        profiles: [{name: westmere-vm, cpu: {amd64: Westmere}}]
        run: {args: [hello]}
    """)
    c = r.cell("linux/amd64/v3:scratch:westmere-vm")
    assert c["verdict"] == "unsupported-cpu"
    assert "v3 microarchitecture support" in c["explanation"]
    assert "linux/amd64/v2" in c["fix"] and "GOAMD64=v2" in c["fix"]


def test_goamd64_v4_under_tcg_is_emulation_unsupported(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets: [linux/amd64/v4]
        run: {args: [hello]}
        xfail: [{target: linux/amd64/v4, verdict: emulation-unsupported}]
    """)
    c = r.cell("linux/amd64/v4:scratch:baseline")
    assert c["cpu"] == "Skylake-Server"
    assert c["verdict"] == "emulation-unsupported"
    assert "avx512f" in c["explanation"]
    assert r.rc == 0     # the xfail makes it pass


def test_nil_dereference_is_crashed(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets: [linux/arm64, linux/amd64]
        profiles: [baseline]
        run: {args: [nil]}
    """)
    for t in ("linux/arm64", "linux/amd64"):
        c = r.cell(f"{t}:scratch:baseline")
        assert c["verdict"] == "crashed", c
        assert "nil pointer dereference" in c["explanation"]


def _procs_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            found.append(pid)
    return found


@pytest.mark.parametrize("profile", ["baseline", "host"])
def test_timeout_kills_the_whole_process_tree(xrun_matrix, profile):
    marker = f"xarch-marker-{uuid.uuid4().hex}"
    t0 = time.monotonic()
    r = xrun_matrix(f"""
        name: probe
        targets: [linux/amd64]
        profiles: [{profile}]
        run: {{args: [sleepfork, {marker}], timeout: 3}}
    """)
    assert time.monotonic() - t0 < 60
    c = r.cell(f"linux/amd64:scratch:{profile}")
    assert c["verdict"] == "timeout", c
    assert "3s" in c["explanation"]
    time.sleep(0.5)
    assert _procs_with(marker) == []


def test_example_matrix_passes_and_explains_the_pi_zero_catch(tmp_path):
    rep = tmp_path / "r.json"
    p = run_xrun(["matrix.yaml", "--json", str(rep)], cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "linux/arm:scratch:pi-zero" in p.stdout
    assert "fix:" in p.stdout and "linux/arm/v6" in p.stdout
    import json
    r = json.loads(rep.read_text())
    pz = next(c for c in r["cells"] if c["id"] == "linux/arm:scratch:pi-zero")
    assert pz["verdict"] == "unsupported-cpu" and pz["xfail"] == "unsupported-cpu" and pz["passed"]
