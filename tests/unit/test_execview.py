"""What `xrun exec` lets a test binary see (runner/execview.py): variables and paths, as pure logic."""

from __future__ import annotations

from pathlib import Path

from xarch.execview import cell_env, denied, view_for


def test_credentials_and_host_paths_stay_home():
    for name in ("SSH_AUTH_SOCK", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "NPM_TOKEN", "PATH",
                 "LD_PRELOAD", "HOME", "TMPDIR", "GOROOT", "XDG_RUNTIME_DIR", "MY_API_KEY", "DB_PASSWORD"):
        assert denied(name), name
    for name in ("MY_FLAG", "LANG", "USER", "TERM", "GOFLAGS", "GODEBUG", "GOCOVERDIR", "TZ", "CI", "PWD"):
        assert not denied(name), name


def test_cell_env_passes_the_callers_minus_the_deny_list_and_obeys_env_and_no_env():
    environ = {"MY_FLAG": "1", "GITHUB_TOKEN": "t", "PATH": "/host/bin", "GODEBUG": "x=1", "TERM": "xterm"}
    env = cell_env(environ, [], no_env=False)
    assert env == {"MY_FLAG": "1", "GODEBUG": "x=1", "TERM": "xterm", "HOME": "/tmp/home"}
    env = cell_env(environ, ["GITHUB_TOKEN", "X=2"], no_env=True)
    assert env == {"GODEBUG": "x=1", "TERM": "xterm", "GITHUB_TOKEN": "t", "X": "2", "HOME": "/tmp/home"}


def test_the_view_binds_the_module_a_scratch_package_and_what_go_test_writes(tmp_path: Path):
    mod = tmp_path / "mod"
    (mod / "pkg" / "testdata").mkdir(parents=True)
    (mod / "pkg" / "sub").mkdir()
    (mod / "go.mod").write_text("module m\n")
    (mod / "pkg" / "a_test.go").write_text("package pkg\n")
    (mod / "pkg" / "testdata" / "in.txt").write_text("x")
    gobuild = tmp_path / "go-build" / "b001"
    gobuild.mkdir(parents=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    args = [f"-test.outputdir={mod}", "-test.cpuprofile=cpu.out", f"-test.coverprofile={gobuild}/_cover_.out",
            f"-test.gocoverdir={gobuild}/gocoverdir"]
    view = view_for(mod / "pkg", args, {"GOCOVERDIR": str(gobuild / "gocoverdir")}, scratch)
    binds = view.binds
    assert binds[0] == (str(mod), str(mod), False)                            # the module, read-only
    assert binds[1] == (str(scratch / "pkg"), str(mod / "pkg"), True)         # the package, a scratch copy
    assert (scratch / "pkg" / "testdata" / "in.txt").read_text() == "x"
    assert (str(mod / "pkg" / "sub"), str(mod / "pkg" / "sub"), False) in binds
    assert (str(mod / "cpu.out"), str(mod / "cpu.out"), True) in binds       # one file, not the module
    assert (str(gobuild), str(gobuild), True) in binds
    assert (str(gobuild / "gocoverdir"), str(gobuild / "gocoverdir"), True) in binds
    assert not any(dst == str(mod) and rw for _, dst, rw in binds)
    assert binds[-1][1] == "/tmp/home" and binds[-1][2]
    view.close()
    assert not scratch.exists()


def test_doctor_engine_choices_match_what_doctor_checks():
    from xarch.commands.doctor import ENGINES
    from xarch.doctor import ENGINE_NEEDS

    assert tuple(ENGINE_NEEDS) == ENGINES
