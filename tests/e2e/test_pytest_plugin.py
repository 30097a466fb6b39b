"""`pytest --xarch` through pytester, in subprocesses (the installed pytest11 entry point, xdist)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from conftest import FIXTURES
from xarch import paths

pytestmark = pytest.mark.e2e

# pytester gives each test an empty HOME, so an empty xarch and Go cache: read the real ones first
_CACHES = {"XARCH_CACHE_DIR": str(paths.cache_dir()),
           "GOCACHE": os.environ.get("GOCACHE") or str(Path(os.environ.get("XDG_CACHE_HOME") or
                                                            Path.home() / ".cache") / "go-build")}


@pytest.fixture
def shared_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's xarch and Go caches for the pytest runs of a test (warm builds and images, as on a rerun)."""
    for k, v in _CACHES.items():
        monkeypatch.setenv(k, v)


def _matrix(pytester: pytest.Pytester, body: str, name: str = "matrix.yaml") -> None:
    out = f"{pytester.path}/dist/{{{{ os }}}}-{{{{ arch }}}}{{{{ variant_suffix }}}}"
    text = f"name: probe\nproject: {FIXTURES / 'probe'}\nbuild: {{output: \"{out}\"}}\n" + textwrap.dedent(body)
    pytester.makefile(".yaml", **{name.removesuffix(".yaml"): text})


BASIC = """
targets: [linux/arm64, linux/arm/v6, linux/arm]
profiles: [baseline, pi-zero]
run: {args: [hello], expect: {stdout: "^probe hello$"}}
xfail: [{target: linux/arm, profile: pi-zero, verdict: unsupported-cpu}]
"""


def test_cells_are_items_with_the_cell_id(pytester):
    _matrix(pytester, BASIC)
    r = pytester.runpytest_subprocess("--xarch", "--collect-only", "-q", "-p", "no:cacheprovider")
    r.stdout.fnmatch_lines([
        "matrix.yaml::linux/arm64:scratch:baseline",
        "matrix.yaml::linux/arm/v6:scratch:baseline",
        "matrix.yaml::linux/arm/v6:scratch:pi-zero",
        "matrix.yaml::linux/arm:scratch:baseline",
        "matrix.yaml::linux/arm:scratch:pi-zero",
        "5 tests collected*",
    ])


def test_run_with_k_selection_and_strict_xfail(pytester):
    _matrix(pytester, BASIC)
    r = pytester.runpytest_subprocess("--xarch", "-p", "no:cacheprovider", "-rxX")
    r.assert_outcomes(passed=4, xfailed=1)
    r = pytester.runpytest_subprocess("--xarch", "-p", "no:cacheprovider", "-k", "pi-zero and arm/v6")
    r.assert_outcomes(passed=1, deselected=4)


def test_unexpected_pass_of_an_xfail_cell_fails(pytester):
    _matrix(pytester, """
targets: [linux/arm/v6]
profiles: [pi-zero]
run: {args: [hello]}
xfail: [{target: linux/arm/v6, verdict: unsupported-cpu}]
""")
    r = pytester.runpytest_subprocess("--xarch", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*XPASS(strict)*matrix xfail: unsupported-cpu*"])


def test_failure_shows_verdict_explanation_fix_and_tails_not_a_traceback(pytester):
    _matrix(pytester, """
targets: [linux/arm]
profiles: [pi-zero]
run: {args: [hello]}
""")
    r = pytester.runpytest_subprocess("--xarch", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines([
        "*linux/arm:scratch:pi-zero: unsupported-cpu*",
        "*killed by SIGILL*arm1176*",
        "*fix: build for what pi-zero (arm1176) can run: target linux/arm/v6 (GOARM=6)*",
        "*--- stderr (tail) ---*",
    ])
    assert "Traceback" not in r.stdout.str() and "runner/pytest_plugin.py" not in r.stdout.str()


def test_bad_matrix_is_a_usage_error_with_file_line(pytester):
    pytester.makefile(".yaml", matrix="name: probe\ntargets: [linux/arm/v9]\n")
    r = pytester.runpytest_subprocess("--xarch", "-p", "no:cacheprovider")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    r.stderr.fnmatch_lines(["*matrix.yaml:2: targets[[]0[]]: unknown variant 'v9' for arm*"])


def test_xdist_builds_each_artifact_once(pytester):
    counter = pytester.path / "builds.log"
    out = f"{pytester.path}/dist/{{{{ os }}}}-{{{{ arch }}}}{{{{ variant_suffix }}}}"
    pytester.makefile(".yaml", matrix=f"""
name: probe
project: {FIXTURES / 'probe'}
build:
  shell: true
  command: "echo {{{{ target }}}} >> {counter} && go build -o {{{{ output }}}} ."
  output: "{out}"
targets: [linux/arm64, linux/arm/v6]
profiles: [baseline, pi-zero, pi2, pi3, {{name: a72, cpu: {{arm64: cortex-a72}}}}]
run: {{args: [hello]}}
exclude: [{{target: linux/arm/v6, profile: pi2}}]
""")
    r = pytester.runpytest_subprocess("--xarch", "-n", "2", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=6)
    assert sorted(counter.read_text().split()) == ["linux/arm/v6", "linux/arm64"]


def test_xdist_workers_start_from_what_the_controller_checked_once(pytester, shared_caches, monkeypatch):
    """The plan, the preflight and the image verification happen once per run, in the controller; the
    workers are handed them (each worker repeated them, which made -n 2 slower). Nobody digests the
    whole project tree: a plain go build is keyed on what it reads (build_inputs.py)."""
    from xarch.rootfs import ImageStore

    for deb in ("arm64", "armel"):
        ImageStore().ensure("alpine", deb)      # cached, as on any rerun: the point is who verifies it
    log = pytester.path / "checks.log"
    pytester.makeconftest(f"""
        import os
        import xarch.build_inputs, xarch.doctor, xarch.matrix
        from xarch.rootfs.store import ImageStore

        def _note(what):
            with open({str(log)!r}, "a") as f:
                f.write(os.environ.get("PYTEST_XDIST_WORKER", "controller") + " " + what + "\\n")

        def _counted(what, fn, name=lambda *a, **k: ""):
            def wrapper(*a, **k):
                _note(what + name(*a, **k))
                return fn(*a, **k)
            return wrapper

        xarch.matrix.load = _counted("load", xarch.matrix.load)
        xarch.build_inputs.tree_digest = _counted("digest", xarch.build_inputs.tree_digest)
        xarch.doctor.preflight = _counted("preflight", xarch.doctor.preflight)
        ImageStore._current = _counted("verify ", ImageStore._current, lambda self, name, arch, level: name + "/" + arch)
    """)
    _matrix(pytester, """
targets: [linux/arm64, linux/arm/v6]
images: [scratch, alpine]
run: {args: [hello], expect: {stdout: "^probe hello$"}}
""")
    # this suite itself may run under xdist: its worker's name must not leak into the inner controller
    for var in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
        monkeypatch.delenv(var, raising=False)
    r = pytester.runpytest_subprocess("--xarch", "-n", "2", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=4)
    lines = sorted(log.read_text().splitlines())
    assert lines == ["controller load", "controller preflight",
                     "controller verify alpine/arm64", "controller verify alpine/armel"], lines


def test_the_matrix_xfail_applies_to_a_marked_test_on_that_cell(pytester, shared_caches):
    """As for the cell's own item: strict, met only by the verdict the matrix names."""
    _matrix(pytester, BASIC)
    pytester.makepyfile(test_mine="""
        import pytest

        @pytest.mark.xarch(targets="linux/arm")
        def test_hello(xarch_cell):
            assert xarch_cell.run(["hello"]).verdict == "ok"

        @pytest.mark.xarch(targets="linux/arm", profiles="pi-zero")
        def test_never_runs_it(xarch_cell):
            assert xarch_cell.artifact.is_file()

        @pytest.mark.xarch(targets="linux/arm", profiles="pi-zero")
        def test_fails_for_another_reason(xarch_cell):
            assert xarch_cell.run(["exit", "3"]).verdict == "unsupported-cpu"
            raise RuntimeError("after the expected verdict: still the xfail")

        @pytest.mark.xarch(targets="linux/arm", profiles="pi-zero")
        def test_fails_without_the_verdict(xarch_cell):
            assert False, "not the cell's fault"
    """)
    r = pytester.runpytest_subprocess("test_mine.py", "-p", "no:cacheprovider", "-rxXf")
    r.assert_outcomes(passed=1, xfailed=2, failed=2)
    r.stdout.fnmatch_lines_random([
        "XFAIL test_mine.py::test_hello?linux/arm:scratch:pi-zero? - matrix xfail: unsupported-cpu",
        "XFAIL test_mine.py::test_fails_for_another_reason?linux/arm:scratch:pi-zero? - matrix xfail: unsupported-cpu",
        "FAILED test_mine.py::test_never_runs_it?linux/arm:scratch:pi-zero?*",
        "FAILED test_mine.py::test_fails_without_the_verdict?linux/arm:scratch:pi-zero?*",
        "[[]XPASS(strict)[]] matrix xfail: unsupported-cpu",
        "E       AssertionError: not the cell's fault",
    ])


def test_an_xfail_cell_that_fails_with_another_verdict_fails(pytester, shared_caches):
    """The matrix's xfail names a verdict: another failure is not it (xrun run fails such a cell too)."""
    _matrix(pytester, """
targets: [linux/arm]
profiles: [pi-zero]
run: {args: [hello]}
xfail: [{target: linux/arm, verdict: crashed}]
""")
    r = pytester.runpytest_subprocess("--xarch", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*linux/arm:scratch:pi-zero: unsupported-cpu (the matrix expects crashed)*"])


def test_xarch_cell_fixture_in_a_user_test(pytester):
    _matrix(pytester, BASIC)
    pytester.makepyfile(test_mine="""
        import pytest

        @pytest.mark.xarch(targets=["linux/arm64", "linux/arm/v6"], profiles="baseline")
        def test_prints(xarch_cell):
            r = xarch_cell.run(["print", "hi from " + xarch_cell.cell.target.arch])
            assert r.verdict == "ok" and r.exit_code == 0
            assert r.stdout == "hi from " + xarch_cell.cell.target.arch + "\\n"
            assert xarch_cell.artifact.is_file()

        @pytest.mark.xarch(targets="linux/arm64")
        def test_exit_status(xarch_cell):
            r = xarch_cell.run(["exit", "7"], expect_exit=7)
            assert (r.exit_code, r.verdict) == (7, "ok")
    """)
    r = pytester.runpytest_subprocess("test_mine.py", "-v", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=3)
    r.stdout.fnmatch_lines(["*test_prints?linux/arm64:scratch:baseline? PASSED*"])


def test_a_crashed_worker_is_reported_as_that_cells_failure(pytester):
    _matrix(pytester, BASIC)
    pytester.makepyfile(test_crash="""
        import os, signal
        import pytest

        @pytest.mark.xarch(targets="linux/arm64")
        def test_dies(xarch_cell):
            os.kill(os.getpid(), signal.SIGKILL)     # the worker process dies mid-test

        @pytest.mark.xarch(targets="linux/arm/v6", profiles="baseline")
        def test_lives(xarch_cell):
            assert xarch_cell.run(["hello"]).verdict == "ok"
    """)
    r = pytester.runpytest_subprocess("test_crash.py", "-n", "2", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    r.stdout.fnmatch_lines(["*crashed while running*test_dies?linux/arm64:scratch:baseline?*"])


def test_a_cell_whose_build_failed_is_not_runnable_as_in_xrun_run(pytester):
    """Both front ends give a failed build's cells the same verdict (the plugin used the build's)."""
    out = f"{pytester.path}/dist/{{{{ os }}}}-{{{{ arch }}}}"
    pytester.makefile(".yaml", matrix=f"name: probe\nproject: {FIXTURES / 'probe'}\ntargets: [linux/amd64]\n"
                      f'build: {{output: "{out}", command: [go, build, -o, "{{{{ output }}}}", ./does-not-exist]}}\n'
                      "run: {args: [hello]}\n")
    r = pytester.runpytest_subprocess("--xarch", "-p", "no:cacheprovider")
    r.assert_outcomes(failed=1)
    r.stdout.fnmatch_lines(["*linux/amd64:scratch:baseline: not-runnable*",
                            "*not run: the build of linux/amd64 failed*"])


def test_the_plugin_imports_nothing_heavy_until_asked(pytester):
    """pytest loads the plugin in every project of the environment: start-up must cost nothing."""
    pytester.makepyfile(test_plain="""
        import sys

        def test_nothing_loaded():
            heavy = [m for m in sys.modules if m.startswith(("xarch.", "jinja2", "ruamel", "elftools", "docker"))
                     and m != "xarch.pytest_plugin"]
            assert heavy == [], heavy
    """)
    r = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    r.assert_outcomes(passed=1)
