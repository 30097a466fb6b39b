"""`xrun exec --launcher`: the compiled launcher runs a cached launch with no Python, exactly as
`xrun exec` would (the same sandbox command line, view and environment), and hands Python what it
cannot do itself: the first run of a kind, options it does not know, an exit to explain."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
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
