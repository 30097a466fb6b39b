"""`pytest --xarch` through pytester, in subprocesses (the installed pytest11 entry point, xdist)."""

from __future__ import annotations

import textwrap

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e


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
