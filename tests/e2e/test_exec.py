"""`xrun exec` as a `go test -exec` wrapper: a package's own tests on the target CPU and image."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
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


@pytest.fixture(params=["python", "launcher"])
def way(request: pytest.FixtureRequest) -> Callable[..., list[str]]:
    """How `xrun exec` is started, with options: the Python command, or the compiled launcher
    (`xrun exec --launcher`, which hands Python what it does not do itself): both must behave alike."""
    def argv(*options: str) -> list[str]:
        if request.param == "python":
            return [sys.executable, "-m", "xarch", "exec", *options]
        p = run_xrun(["exec", "--launcher", *options], env={"PYTHONPATH": str(ROOT)})
        assert p.returncode == 0, p.stderr
        return shlex.split(p.stdout)
    return argv


def _exec(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, text=True, capture_output=True, timeout=600,
                          env={**os.environ, **(env or {})})


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


def test_exec_passes_args_stdin_stdout_and_exit_status(tmp_path, probe_arm64):
    out = probe_arm64
    p = run_xrun(["exec", str(out), "exit", "5"])
    assert p.returncode == 5 and p.stdout == "probe exiting 5\n"
    p = run_xrun(["exec", "--image", "scratch", str(out), "print", "a b"])
    assert p.returncode == 0 and p.stdout == "a b\n"
    p = run_xrun(["exec", str(tmp_path / "missing")])
    assert p.returncode == 2 and "no such file" in p.stderr
    p = run_xrun(["exec", "--profile", "pizero", str(out), "print", "x"])     # a typo of a profile
    assert p.returncode == 2 and "did you mean 'pi-zero'?" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = run_xrun(["exec", "--profile", "cortex-a53", str(out), "print", "a qemu model"])
    assert p.returncode == 0 and p.stdout == "a qemu model\n", p.stderr


ENVMOD = FIXTURES / "gotestenv"


def _module_copy(tmp_path: Path) -> Path:
    import shutil
    dst = tmp_path / "gotestenv"
    shutil.copytree(ENVMOD, dst)
    return dst


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_go_test_sees_the_module_writes_a_scratch_copy_and_gets_coverage_and_profiles(go_bin, tmp_path, way):
    mod = _module_copy(tmp_path)
    before = _tree(mod)
    env = {**os.environ, "GOOS": "linux", "GOARCH": "arm64", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
           "GOPROXY": "off", "GOFLAGS": "-count=1", "MY_FLAG": "1", "MY_SECRET_TOKEN": "hunter2",
           "PATH": f"{go_bin.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([str(go_bin), "test", "-v", "-exec", shlex.join(way()), "-cover", "-coverprofile=c.out",
                        "-cpuprofile=cpu.out", "./pkg"], cwd=mod, env=env, text=True, capture_output=True,
                       timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "MY_FLAG seen" in out                   # the caller's variable passed; the token did not (the test checks)
    assert "--- PASS: TestModuleTestdata" in out and "--- PASS: TestWritesItsPackageDirectory" in out
    assert "coverage: 100.0% of statements" in out
    assert (mod / "c.out").read_text().startswith("mode: ")
    assert (mod / "cpu.out").stat().st_size > 0      # -test.outputdir is where go test ran, as natively
    after = _tree(mod)
    assert "pkg/generated.out" not in after                   # the test wrote a scratch copy
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) <= {"c.out", "cpu.out", "pkg.test"}, set(after) - set(before)


def test_exec_env_controls(tmp_path, probe_arm64, way):
    out = probe_arm64
    env = {**os.environ, "MY_FLAG": "1", "GITHUB_TOKEN": "x", "LANG": "C.UTF-8"}
    names = ["MY_FLAG", "LANG", "GITHUB_TOKEN", "HOME", "PATH", "X"]

    def seen_in(p: subprocess.CompletedProcess[str]) -> dict[str, str]:
        return {k: v for k, _, v in (ln.partition("=") for ln in p.stdout.splitlines()) if v}

    p = _exec([*way(), str(out), "env", *names], env=env)
    seen = seen_in(p)
    assert p.returncode == 0, p.stderr
    assert seen.get("MY_FLAG") == "1" and seen.get("LANG") == "C.UTF-8" and "GITHUB_TOKEN" not in seen
    assert seen["HOME"] == "/tmp/home" and os.environ["PATH"] != seen["PATH"]
    p = _exec([*way("--no-env", "--env", "GITHUB_TOKEN", "--env", "X=1"), str(out), "env", *names], env=env)
    seen = seen_in(p)
    assert "MY_FLAG" not in seen and seen.get("GITHUB_TOKEN") == "x" and seen.get("X") == "1"


def test_go_runtime_cpu_refusal_is_a_verdict_in_exec_mode(tmp_path, go_bin, way):
    out = tmp_path / "probe-v3"
    subprocess.run([str(go_bin), "build", "-o", str(out), "."], cwd=FIXTURES / "probe", check=True,
                   env={**os.environ, "GOOS": "linux", "GOARCH": "amd64", "GOAMD64": "v3", "CGO_ENABLED": "0"})
    _exec([*way("--profile", "x86-64-v2-vm"), str(out)])     # a launcher's first run of a kind is Python's
    p = _exec([*way("--profile", "x86-64-v2-vm"), str(out)])
    assert p.returncode == 1, (p.stdout, p.stderr)
    assert "v3 microarchitecture support" in p.stderr            # Go's own line still comes through
    assert "unsupported-cpu" in p.stderr and "GOAMD64=v2" in p.stderr, p.stderr
    ok = _exec([*way("--profile", "x86-64-v3"), str(out)])
    assert ok.returncode == 0 and "unsupported-cpu" not in ok.stderr


def test_wrappers_use_the_entry_point_skip_the_host_arch_and_work_in_a_module_with_runner(go_bin, tmp_path):
    from xarch import platforms
    host = platforms.host_goarch()
    p = run_xrun(["exec", "--install-wrappers", str(tmp_path / "bin"), "--profile", "pi3"])
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "bin" / f"go_linux_{host}_exec").exists()
    assert f"go runs {host} test binaries on this {host} host itself" in p.stderr
    assert '-exec "$(xrun exec --launcher --image scratch --profile pi3' in p.stderr, p.stderr
    other = "arm64" if host != "arm64" else "amd64"
    text = (tmp_path / "bin" / f"go_linux_{other}_exec").read_text()
    launcher = shlex.split(text.splitlines()[-1])[1]       # exec LAUNCHER OPTIONS "$@"
    assert Path(launcher).name == "xrun-exec" and "-m runner" not in text
    xrun = json.loads(Path(f"{launcher}.json").read_text())["xrun"]     # how it starts xrun: the entry point
    assert xrun[0].endswith("/xrun") or xrun[-3:] == ["-P", "-m", "xarch"], xrun
    mod = _module_copy(tmp_path)
    env = {**os.environ, "GOOS": "linux", "GOARCH": other, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
           "GOPROXY": "off", "GOFLAGS": "-count=1", "PYTHONPATH": "",
           "PATH": f"{tmp_path / 'bin'}{os.pathsep}{go_bin.parent}{os.pathsep}{os.environ['PATH']}"}
    r = subprocess.run([str(go_bin), "test", "./runner"], cwd=mod, env=env, text=True, capture_output=True,
                       timeout=600)
    assert r.returncode == 0 and "ok  \texample.com/gotestenv/runner" in r.stdout, r.stdout + r.stderr
    # the cache wiped under the wrapper (the launcher gone): xrun itself runs the tests
    wrapper = tmp_path / "bin" / f"go_linux_{other}_exec"
    wrapper.write_text(wrapper.read_text().replace(launcher, str(tmp_path / "gone" / "xrun-exec")))
    r = subprocess.run([str(go_bin), "test", "./runner"], cwd=mod, env=env, text=True, capture_output=True,
                       timeout=600)
    assert r.returncode == 0 and "ok  \texample.com/gotestenv/runner" in r.stdout, r.stdout + r.stderr


def test_a_test_needing_what_the_image_lacks_is_named_in_the_closing_line(go_bin, tmp_path, way):
    mod = _module_copy(tmp_path)
    env = {**os.environ, "GOOS": "linux", "GOARCH": "arm64", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
           "GOPROXY": "off", "GOFLAGS": "-count=1", "RUN_SH": "1",
           "PATH": f"{go_bin.parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([str(go_bin), "test", "-exec", shlex.join(way()), "-run", "TestShell", "./pkg"], cwd=mod, env=env,
                   capture_output=True, timeout=600)       # the first run of a kind makes its plan
    bad = subprocess.run([str(go_bin), "test", "-exec", shlex.join(way()), "-run", "TestShell", "./pkg"], cwd=mod, env=env,
                         text=True, capture_output=True, timeout=600)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0, out
    assert 'xrun exec: image scratch has no sh: the program ran sh, which scratch lacks' in out, out
    assert "--image alpine" in out
    ok = subprocess.run([str(go_bin), "test", "-v", "-exec", shlex.join(way("--image", "alpine")), "-run", "TestShell",
                         "./pkg"], cwd=mod, env=env, text=True, capture_output=True, timeout=600)
    assert ok.returncode == 0 and "from-sh" in ok.stdout, ok.stdout + ok.stderr


@pytest.mark.parametrize(("test", "flag", "says"), [
    ("TestZone", "RUN_TZ", "xrun exec: image scratch has no /usr/share/zoneinfo: build with -tags timetzdata"),
    ("TestGoTool", "RUN_GO", "xrun exec: image scratch has no go: the program ran go, which scratch lacks"),
], ids=["zoneinfo", "go-tool"])
def test_what_real_suites_needed_of_the_image_is_named(go_bin, tmp_path, way, test, flag, says):
    """What ivy's TestAll (a time zone) and xxhash's, goawk's and ivy's tests that run `go` met in scratch:
    the test fails as it would, and the closing line names what the image lacks."""
    mod = _module_copy(tmp_path)
    env = {**os.environ, "GOOS": "linux", "GOARCH": "arm64", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local",
           "GOPROXY": "off", "GOFLAGS": "-count=1", flag: "1",
           "PATH": f"{go_bin.parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(go_bin), "test", "-exec", shlex.join(way()), "-run", f"{test}$", "./pkg"]
    subprocess.run(cmd, cwd=mod, env=env, capture_output=True, timeout=600)   # the first run of a kind makes its plan
    bad = subprocess.run(cmd, cwd=mod, env=env, text=True, capture_output=True, timeout=600)
    out = bad.stdout + bad.stderr
    assert bad.returncode != 0 and f"--- FAIL: {test}" in out, out
    assert says in out, out
    if test == "TestZone":      # the fix it names works: the zone database compiled into the binary
        ok = subprocess.run([*cmd[:2], "-tags", "timetzdata", "-v", *cmd[2:]], cwd=mod, env=env, text=True,
                            capture_output=True, timeout=600)
        assert ok.returncode == 0 and "zone America/New_York" in ok.stdout, ok.stdout + ok.stderr
