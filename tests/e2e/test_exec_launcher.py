"""`xrun exec --launcher`: the compiled launcher runs a cached launch with no Python, exactly as
`xrun exec` would (the same sandbox command line, view and environment), and hands Python what it
cannot do itself: the first run of a kind, options it does not know, an exit to explain."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_xrun

pytestmark = pytest.mark.e2e


@pytest.fixture
def probe(probe_arm64: Path) -> Path:
    return probe_arm64


def launcher(*options: str) -> list[str]:
    p = run_xrun(["exec", "--launcher", *options], env={"PYTHONPATH": str(ROOT)})
    assert p.returncode == 0, p.stderr
    argv = shlex.split(p.stdout)
    assert Path(argv[0]).name == "xrun-exec" and os.access(argv[0], os.X_OK), argv
    return argv


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None,
         **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, text=True, capture_output=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}, **kw)  # type: ignore[call-overload]


def test_a_cached_launch_starts_no_python_and_passes_status_and_output(probe: Path, tmp_path: Path) -> None:
    cmd = launcher("--profile", "pi4")
    first = _run([*cmd, str(probe), "print", "warm"], tmp_path, {"XARCH_LAUNCHER_DEBUG": "1"})
    assert first.returncode == 0 and first.stdout == "warm\n", first.stderr
    # the plan exists now (made by this run or an earlier one): the launcher runs it itself
    p = _run([*cmd, str(probe), "print", "a b"], tmp_path, {"XARCH_LAUNCHER_DEBUG": "1"})
    assert (p.returncode, p.stdout) == (0, "a b\n") and "to xrun exec" not in p.stderr, p.stderr
    # stdin passes through
    p = _run([*cmd, str(probe), "files"], tmp_path, {"XARCH_LAUNCHER_DEBUG": "1"}, input="")
    assert "to xrun exec: no" not in p.stderr
    # a status other than 0 is Python's to explain (a plain exit status: it adds nothing), and passes through
    p = _run([*cmd, str(probe), "exit", "5"], tmp_path, {"XARCH_LAUNCHER_DEBUG": "1"})
    assert p.returncode == 5 and p.stdout == "probe exiting 5\n", p.stderr
    assert "to xrun exec: explain the exit" in p.stderr and "xrun exec:" not in p.stderr.replace(
        "xrun-exec: to xrun exec: explain the exit", "")
    # what it does not know goes to Python whole: a typo of a profile is Python's exit 2
    p = _run([*launcher(), "--profile", "pizero", str(probe), "print", "x"], tmp_path)
    assert p.returncode == 2 and "did you mean 'pi-zero'?" in p.stderr, p.stderr
    p = _run([*cmd, "--bogus", str(probe)], tmp_path)
    assert p.returncode == 2 and "--bogus" in p.stderr, p.stderr


def test_the_timeout_kills_the_tree_and_a_fault_is_explained(probe: Path, tmp_path: Path) -> None:
    cmd = launcher("--profile", "pi4", "--timeout", "1")
    _run([*cmd, str(probe), "print", "warm"], tmp_path)
    t = time.monotonic()
    p = _run([*cmd, str(probe), "sleep", "30"], tmp_path, {"XARCH_LAUNCHER_DEBUG": "1"})
    assert p.returncode == 124 and time.monotonic() - t < 20, p.stderr
    assert "xrun exec: timeout after 1s in linux/arm64:scratch:pi4; killed" in p.stderr
    assert "to xrun exec" not in p.stderr
    # a nil dereference: Go's panic, exit 2, classified by Python from the launcher's record
    p = _run([*cmd, str(probe), "nil"], tmp_path)
    assert p.returncode == 2 and "nil pointer dereference" in p.stderr, p.stderr
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"xarch-exec-{os.getpid()}-*"))


def _python_argv(binary: Path, args: list[str], cwd: Path, environ: dict[str, str], items: list[str],
                 no_env: bool, scratch: Path) -> list[str]:
    from xarch import paths
    from xarch.engines import execplan
    from xarch.execview import cell_env, view_for

    kind = execplan.header_kind(str(binary))
    assert kind is not None
    plan = execplan.load(execplan.plan_key(paths.cache_dir(), "scratch", "pi4", kind))
    assert plan is not None
    env = cell_env(environ, items, no_env)
    view = view_for(cwd, args, env, scratch)
    return execplan.argv_of(plan, str(binary), args, str(cwd), view.binds, env, 3)


CASES = [        # @T@: the test's own tmp dir, outside the module
    ([], [], {}),
    (["-test.coverprofile=c.out", "-test.outputdir", "@T@/out", "-test.cpuprofile=p/cpu.out"], [], {}),
    (["-test.gocoverdir=@T@/cover", "-test.testlogfile", "../log.txt", "-test.trace="], [],
     {"GOCOVERDIR": "@T@/cover2"}),
    (["x"], ["--no-env", "--env", "GITHUB_TOKEN", "--env", "X=1"], {"GITHUB_TOKEN": "t", "GOFLAGS": "-v"}),
    (["y"], ["--env=LANG"], {"MY_FLAG": "1", "AWS_SECRET": "s", "LD_PRELOAD": "/x.so", "LANG": "C"}),
]


@pytest.mark.parametrize(("args", "options", "extra_env"), CASES)
def test_the_launchers_command_line_is_pythons(probe: Path, tmp_path: Path, args: list[str], options: list[str],
                                              extra_env: dict[str, str]) -> None:
    args = [a.replace("@T@", str(tmp_path)) for a in args]
    extra_env = {k: v.replace("@T@", str(tmp_path)) for k, v in extra_env.items()}
    mod = tmp_path / "mod"
    (mod / "pkg" / "testdata" / "deep").mkdir(parents=True)
    (mod / "pkg" / "sub").mkdir()
    (mod / "pkg" / "p").mkdir()
    (mod / "go.mod").write_text("module example.com/m\n")
    (mod / "pkg" / "a_test.go").write_text("package pkg\n")
    (mod / "pkg" / "testdata" / "deep" / "in.txt").write_text("x")
    (mod / "pkg" / "link").symlink_to("a_test.go")
    cwd = mod / "pkg"
    cmd = launcher("--profile", "pi4")
    _run([*cmd, str(probe), "print", "warm"], cwd)
    env = {k: v for k, v in os.environ.items() if k != "XARCH_LAUNCHER_DEBUG"}
    env.update(extra_env, PYTHONPATH=str(ROOT))
    p = subprocess.run([*cmd, *options, str(probe), *args], cwd=cwd, text=True, capture_output=True, timeout=300,
                       env={**env, "XARCH_LAUNCHER_DEBUG": "argv"})
    assert p.returncode == 0, p.stderr
    go = json.loads(p.stdout)
    items = [o.partition("=")[2] if o.startswith("--env=") else o for o in options]
    items = [items[i + 1] for i, o in enumerate(items) if o == "--env"] + [
        o.partition("=")[2] for o in options if o.startswith("--env=")]
    scratch = tmp_path / "py-scratch"
    scratch.mkdir()
    py = _python_argv(probe, args, cwd, env, items, "--no-env" in options, scratch)
    home = go[go.index("/tmp/home") - 1]           # the launcher's scratch dir is its own
    assert home.endswith("/home")
    go_scratch = home.removesuffix("/home")
    assert [a.replace(go_scratch, "<scratch>") for a in go] == [a.replace(str(scratch), "<scratch>") for a in py]
    assert not Path(go_scratch).exists()       # removed after the run


def _both(cmd_options: list[str]) -> list[tuple[str, list[str]]]:
    return [("python", [sys.executable, "-m", "xarch", "exec", *cmd_options]), ("launcher", launcher(*cmd_options))]


def test_only_stdio_reaches_the_binary_not_what_the_wrapper_inherited(probe: Path, tmp_path: Path) -> None:
    """A shell redirection or go test's own descriptors stay outside (Popen's close_fds, and the launcher's)."""
    leak = tmp_path / "host-file"
    leak.write_text("secret")
    for way, cmd in _both(["--profile", "pi4"]):
        _run([*cmd, str(probe), "print", "warm"], tmp_path)
        fd = os.open(leak, os.O_RDWR)
        try:
            p = _run([*cmd, str(probe), "fds"], tmp_path, pass_fds=(fd,))
        finally:
            os.close(fd)
        assert p.returncode == 0, (way, p.stderr)
        fds = {line.split()[0] for line in p.stdout.splitlines()}
        assert fds <= {"0", "1", "2"} and str(leak) not in p.stdout, (way, p.stdout)


def test_a_symlinked_working_directory_is_the_physical_one_on_both_paths(probe: Path, tmp_path: Path) -> None:
    """go test sets PWD to the package dir as it was reached: through a symlink, that is not getcwd()."""
    real = tmp_path / "real"
    (real / "pkg").mkdir(parents=True)
    (real / "go.mod").write_text("module example.com/m\n")
    (tmp_path / "link").symlink_to(real)
    logical = tmp_path / "link" / "pkg"
    cmd = launcher("--profile", "pi4")
    _run([*cmd, str(probe), "print", "warm"], tmp_path)
    p = subprocess.run([*cmd, str(probe), "print", "x"], cwd=logical, text=True, capture_output=True, timeout=300,
                       env={**os.environ, "PWD": str(logical), "XARCH_LAUNCHER_DEBUG": "argv"})
    go = json.loads(p.stdout)
    assert go[go.index("--chdir") + 1] == str(real / "pkg"), go
    binds = [go[i + 1:i + 3] for i, a in enumerate(go) if a in ("--bind", "--ro-bind")]
    assert [str(real), str(real)] in binds and not any(str(tmp_path / "link") in " ".join(b) for b in binds), binds
    # go test's own flags name the package dir as $PWD does: only the files it wants become writable,
    # at the path it gave, and the launcher and Python agree
    args = [f"-test.outputdir={logical}", "-test.cpuprofile=cpu.out", f"-test.coverprofile={logical}/c.out"]
    env = {**os.environ, "PWD": str(logical)}
    p = subprocess.run([*cmd, str(probe), *args], cwd=logical, text=True, capture_output=True, timeout=300,
                       env={**env, "XARCH_LAUNCHER_DEBUG": "argv"})
    go = json.loads(p.stdout)
    writable = [go[i + 1:i + 3] for i, a in enumerate(go) if a == "--bind"]
    assert [str(logical / "cpu.out")] * 2 in writable and [str(logical / "c.out")] * 2 in writable, writable
    assert not any(b[0] in (str(logical), str(real / "pkg")) for b in writable), writable     # not the dir
    (tmp_path / "py").mkdir()
    py = _python_argv(probe, args, real / "pkg", env, [], False, tmp_path / "py")
    home = go[go.index("/tmp/home") - 1].removesuffix("/home")
    assert [a.replace(home, "<s>") for a in go] == [a.replace(str(tmp_path / "py"), "<s>") for a in py]


def test_a_reader_that_quits_ends_the_run_as_natively(probe: Path, tmp_path: Path) -> None:
    """`| head`: the binary meets the closed pipe (SIGPIPE), nothing hangs, nothing is left behind."""
    for way, cmd in _both(["--profile", "pi4", "--timeout", "60"]):
        _run([*cmd, str(probe), "print", "warm"], tmp_path)
        t = time.monotonic()
        p = subprocess.run(f"{shlex.join([*cmd, str(probe), 'lines', '2000000'])} | head -c 20; "
                           "echo \" rc=${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash", cwd=tmp_path,
                           text=True, capture_output=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert p.stdout.startswith("line 0\nline 1\n"), (way, p.stdout, p.stderr)
        assert time.monotonic() - t < 50 and " rc=124" not in p.stdout, (way, p.stdout, p.stderr)
        assert "Traceback" not in p.stderr, (way, p.stderr)


def test_timeout_wording_sigterm_and_a_failed_hand_over(probe: Path, tmp_path: Path) -> None:
    cmd = launcher("--profile", "pi4", "--timeout", "0.123456789")
    _run([*cmd, str(probe), "print", "warm"], tmp_path)
    p = _run([*cmd, str(probe), "sleep"], tmp_path)
    assert p.returncode == 124 and "timeout after 0.123457s in" in p.stderr, p.stderr   # Python's {:g}
    # SIGTERM: the tree is killed, the launcher cleans up and dies by the signal
    cmd = launcher("--profile", "pi4")
    sleeper = subprocess.Popen([*cmd, str(probe), "sleep"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    os.kill(sleeper.pid, signal.SIGTERM)
    assert sleeper.wait(timeout=30) == -signal.SIGTERM
    assert not list(Path(tempfile.gettempdir()).glob(f"xarch-exec-{sleeper.pid}-*"))
    # a launcher that cannot start xrun to explain an exit still returns the binary's status
    lone = tmp_path / "lone" / "xrun-exec"
    lone.parent.mkdir()
    shutil.copy2(cmd[0], lone)           # without its config beside it
    p = _run([str(lone), *cmd[1:], str(probe), "exit", "5"], tmp_path)
    assert p.returncode == 5 and p.stdout == "probe exiting 5\n", p.stderr


def test_explain_exit_takes_only_a_launchers_record(tmp_path: Path) -> None:
    """The hand-over removes the scratch dir it names: a record elsewhere is refused, nothing removed."""
    keep = tmp_path / "precious"
    keep.mkdir()
    rec = tmp_path / "exit.json"
    rec.write_text(json.dumps({"scratch": str(keep)}))
    p = run_xrun(["exec", "--explain-exit", str(rec)], env={"PYTHONPATH": str(ROOT)})
    assert p.returncode == 2 and "not a record of xrun exec's launcher" in p.stderr, p.stderr
    assert keep.is_dir()
