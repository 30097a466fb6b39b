"""`xrun exec` as a `go test -exec` wrapper: a package's own tests on the target CPU and image."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, run_xrun

pytestmark = pytest.mark.e2e
PKG = FIXTURES / "gotest"


def _go_test(go_bin: Path, goarm: str, exec_cmd: str | None, extra_path: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GOOS": "linux", "GOARCH": "arm", "GOARM": goarm, "CGO_ENABLED": "0",
           "GOTOOLCHAIN": "local", "GOPROXY": "off", "GOFLAGS": "-count=1",
           "PATH": f"{extra_path}{os.pathsep if extra_path else ''}{go_bin.parent}{os.pathsep}{os.environ['PATH']}"}
    argv = [str(go_bin), "test", *(["-exec", exec_cmd] if exec_cmd else []), "./..."]
    return subprocess.run(argv, cwd=PKG, env=env, text=True, capture_output=True, timeout=600)


def _xrun() -> str:
    return f"{sys.executable} -m xarch exec"


@pytest.fixture(autouse=True)
def _importable(monkeypatch):
    # `python -m xarch` from the package dir needs the repo on the path (an editable install has it)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))


def test_go_test_passes_on_armv7_and_fails_on_armv6(go_bin):
    ok = _go_test(go_bin, "7", f"{_xrun()} --profile pi2")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok  \texample.com/gotest" in ok.stdout
    bad = _go_test(go_bin, "7", f"{_xrun()} --profile pi-zero")
    assert bad.returncode != 0
    both = bad.stdout + bad.stderr      # go test folds the test binary's stderr into its stdout
    assert "unsupported-cpu" in both and "linux/arm/v6 (GOARM=6)" in both
    assert "FAIL\texample.com/gotest" in bad.stdout
    # built for the Pi Zero's level, the same tests pass there
    v6 = _go_test(go_bin, "6", f"{_xrun()} --profile pi-zero")
    assert v6.returncode == 0, v6.stdout + v6.stderr


def test_installed_wrappers_are_picked_up_by_go_test(go_bin, tmp_path):
    p = run_xrun(["exec", "--install-wrappers", str(tmp_path / "bin"), "--profile", "pi-zero"])
    assert p.returncode == 0, p.stderr
    wrapper = tmp_path / "bin" / "go_linux_arm_exec"
    assert str(wrapper) in p.stdout and os.access(wrapper, os.X_OK)
    r = _go_test(go_bin, "7", None, extra_path=str(tmp_path / "bin"))
    assert r.returncode != 0 and "unsupported-cpu" in r.stdout + r.stderr, r.stdout + r.stderr
    r = _go_test(go_bin, "6", None, extra_path=str(tmp_path / "bin"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_exec_passes_args_stdin_stdout_and_exit_status(tmp_path, go_bin):
    out = tmp_path / "probe"
    subprocess.run([str(go_bin), "build", "-o", str(out), "."], cwd=FIXTURES / "probe", check=True,
                   env={**os.environ, "GOOS": "linux", "GOARCH": "arm64", "CGO_ENABLED": "0"})
    p = run_xrun(["exec", str(out), "exit", "5"])
    assert p.returncode == 5 and p.stdout == "probe exiting 5\n"
    p = run_xrun(["exec", "--image", "scratch", str(out), "print", "a b"])
    assert p.returncode == 0 and p.stdout == "a b\n"
    p = run_xrun(["exec", str(tmp_path / "missing")])
    assert p.returncode == 2 and "no such file" in p.stderr
