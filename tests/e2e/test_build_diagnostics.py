"""Build-time traps (seed bugs 1, 7, 8, 10): the right cause and fix, and the fix makes the next run pass."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e
SEEDS = FIXTURES / "seeds"


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "proj"
    shutil.copytree(src, dst)
    return dst


def test_seed1_cgo_without_cross_compiler_then_zig(xrun_matrix):
    r = xrun_matrix("""
        name: cgo
        targets:
          - {target: linux/arm64, env: {CGO_ENABLED: "1"}}
    """, project=SEEDS / "cgo")
    b = r.build("linux/arm64")
    assert (b["verdict"], b["cause"]) == ("build-failed", "cgo-cross-compiler-missing")
    assert "host's (amd64) gcc" in b["explanation"] and "gcc_arm64.S" in b["explanation"]
    assert "cc: zig" in b["fix"] and "aarch64-linux-musl" in b["fix"] and "CGO_ENABLED=0" in b["fix"]
    assert r.rc == 1
    # the fix: a C cross compiler from the ziglang package; the static musl binary runs under qemu
    r = xrun_matrix("""
        name: cgo
        targets:
          - {target: linux/arm64, env: {CGO_ENABLED: "1"}, cc: zig}
          - {target: linux/riscv64, env: {CGO_ENABLED: "1"}, cc: zig}
        run: {expect: {stdout: "^answer 42$"}}
    """, project=SEEDS / "cgo")
    assert r.rc == 0, r.out[-3000:]
    for t in ("linux/arm64", "linux/riscv64"):
        assert r.build(t)["verdict"] == "ok"
        assert "CGO_ENABLED=1" in r.build(t)["artifact_facts"] and ", static" in r.build(t)["artifact_facts"]
        assert r.cell(f"{t}:scratch:baseline")["verdict"] == "ok"


def test_seed7_goos_gated_import_then_build_constraint(xrun_matrix, tmp_path):
    proj = _copy(SEEDS / "goosimport", tmp_path)
    body = """
        name: app
        targets: [linux/amd64, windows/amd64]
    """
    r = xrun_matrix(body, project=proj)
    b = r.build("linux/amd64")
    assert (b["verdict"], b["cause"]) == ("build-failed", "platform-only-import")
    assert "example.com/goosimport/winonly" in b["explanation"] and "main.go" in b["explanation"]
    assert "runtime.GOOS" in b["explanation"] and "//go:build windows" in b["fix"]
    assert r.build("windows/amd64")["verdict"] == "ok"
    # the fix: the import lives only in a windows file; other platforms get a stub
    (proj / "main.go").write_text('package main\n\nimport "fmt"\n\nfunc main() {\n\tsetup()\n\tfmt.Println("hello")\n}\n')
    (proj / "setup_windows.go").write_text('//go:build windows\n\npackage main\n\nimport "example.com/goosimport/winonly"\n\n'
                                           'func setup() { winonly.SetConsoleCP(65001) }\n')
    (proj / "setup_other.go").write_text("//go:build !windows\n\npackage main\n\nfunc setup() {}\n")
    r = xrun_matrix(body, project=proj)
    assert r.rc == 0, r.out[-3000:]
    assert r.cell("linux/amd64:scratch:baseline")["stdout"] == "hello\n"


def test_seed8_file_suffix_excludes_darwin_then_unix_constraint(xrun_matrix, tmp_path):
    proj = _copy(SEEDS / "suffix", tmp_path)
    body = """
        name: app
        targets: [linux/arm64, darwin/arm64]
        run: {expect: {exit: 0}}
    """
    r = xrun_matrix(body, project=proj)
    b = r.build("darwin/arm64")
    assert (b["verdict"], b["cause"]) == ("build-failed", "file-excluded-by-suffix")
    assert "undefined: chownPath" in b["explanation"] and "fileops_linux.go" in b["explanation"]
    assert "_linux.go suffix" in b["explanation"] and "//go:build unix" in b["fix"]
    assert r.build("linux/arm64")["verdict"] == "ok"
    # the fix: one file for every Unix
    text = (proj / "fileops_linux.go").read_text()
    (proj / "fileops_linux.go").unlink()
    (proj / "fileops_unix.go").write_text("//go:build unix\n\n" + text)
    r = xrun_matrix(body, project=proj)
    assert r.rc == 0, r.out[-3000:]
    assert r.build("darwin/arm64")["verdict"] == "ok"
    c = r.cell("darwin/arm64:none:none")
    assert c["verdict"] == "not-runnable" and "macOS" in c["explanation"]


def test_seed10_not_reproducible_then_flags(xrun_matrix, tmp_path, probe_src):
    proj = _copy(probe_src, tmp_path)
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], cwd=proj, check=True)
    subprocess.run([*git, "add", "."], cwd=proj, check=True)
    subprocess.run([*git, "commit", "-qm", "x"], cwd=proj, check=True)
    r = xrun_matrix("""
        name: probe
        targets: [linux/amd64]
        build:
          command: [go, build, -o, "{{ output }}", .]
          output: "@OUT@"
          reproducible: true
    """, project=proj)
    b = r.build("linux/amd64")
    assert b["verdict"] == "ok" and b["reproducible"] is False
    assert "embedded source paths" in b["explanation"] and str(proj) in b["explanation"]
    assert "-trimpath" in b["fix"] and "-buildvcs=false" in b["fix"] and "-ldflags=-buildid=" in b["fix"]
    assert r.rc == 1
    r = xrun_matrix("""
        name: probe
        targets: [linux/amd64]
        build:
          command: [go, build, -trimpath, -buildvcs=false, -ldflags=-buildid=, -o, "{{ output }}", .]
          output: "@OUT@"
          reproducible: true
    """, project=proj)
    assert r.build("linux/amd64")["reproducible"] is True
    assert r.rc == 0, r.out[-3000:]


def test_a_package_in_a_nested_module_names_its_directory_as_the_project(xrun_matrix, tmp_path):
    # golang/example's layout: the repository root is a module, and hello/ has a go.mod of its own
    shutil.copytree(FIXTURES / "nested", tmp_path, dirs_exist_ok=True)
    r = xrun_matrix("""
        name: hello
        package: ./hello
        targets: [linux/amd64]
    """, project=tmp_path)
    b = r.build("linux/amd64")
    assert (b["verdict"], b["cause"]) == ("build-failed", "nested-module"), b["explanation"]
    assert "hello/go.mod makes hello/ a module of its own (example.com/nested/hello)" in b["explanation"]
    assert ("'main module (example.com/nested) does not contain package example.com/nested/hello'"
            in b["explanation"])
    assert b["fix"] == "build from that module: `project: hello` and `package: .` in the matrix"
    assert r.rc == 1
    # the fix, as printed
    r = xrun_matrix("""
        name: hello
        package: .
        targets: [linux/amd64]
        run: {expect: {stdout: "^hello, nested$"}}
    """, project=tmp_path / "hello")
    assert r.rc == 0, r.out[-3000:]
