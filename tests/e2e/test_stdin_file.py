"""run.stdin_file (issue 18): a file's bytes reach the program exactly, in every engine and in the plugin.

The program (tests/fixtures/stdio) prints the sha256 and length of its stdin, so a NUL, a 0xff byte or
a lost tail shows as another digest.
"""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e

DATA = b"\x00\xff binary\r\n" + bytes(range(256)) * 300     # ~77 KB: more than one pipe buffer
EXPECT = f"^sha256 {hashlib.sha256(DATA).hexdigest()} {len(DATA)} err=<nil>\\n$"
MATRIX = f"""
    name: stdio
    targets: [linux/amd64, linux/arm64]
    images: [scratch, alpine]
    run:
      args: [sha256]
      stdin_file: fixtures/data.bin
      expect: {{stdout: '{EXPECT}'}}
"""


@pytest.fixture
def data_file(tmp_path):
    (tmp_path / "fixtures").mkdir()
    (tmp_path / "fixtures" / "data.bin").write_bytes(DATA)


@pytest.mark.parametrize("engine", ["local", "docker-pool", "docker-container"])
def test_stdin_file_bytes_arrive_exactly(xrun_matrix, data_file, engine, request):
    extra, env = ["--engine", "local"], {}
    if engine != "local":
        request.getfixturevalue("docker_daemon")
        extra, env = ["--engine", "docker"], {"XARCH_DOCKER_MODE": engine.removeprefix("docker-")}
    r = xrun_matrix(MATRIX, *extra, project=FIXTURES / "stdio", env=env)
    assert r.rc == 0, (r.out[-3000:], r.err[-2000:])
    cells = r.report["cells"]
    assert len(cells) == 4 and {c["verdict"] for c in cells} == {"ok"}, [(c["id"], c["stdout"]) for c in cells]


def test_inline_stdin_naming_a_file_warns_on_the_console_and_in_the_report(xrun_matrix, data_file):
    body = MATRIX.replace("stdin_file: fixtures/data.bin", "stdin: fixtures/data.bin").replace(
        "[linux/amd64, linux/arm64]", "[linux/amd64]").replace("[scratch, alpine]", "[scratch]")
    r = xrun_matrix(body, project=FIXTURES / "stdio")
    assert r.rc == 1 and r.cell("linux/amd64:scratch:baseline")["verdict"] == "wrong-output"
    (note,) = r.report["plan_notes"]
    assert "run.stdin" in note and "is the text 'fixtures/data.bin'" in note
    assert "`stdin_file: fixtures/data.bin`" in note
    assert "plan: warning: run.stdin" in " ".join(r.out.split())


def test_the_plugin_feeds_stdin_file_to_matrix_items_and_bytes_from_the_fixture(pytester):
    (pytester.path / "fixtures").mkdir()
    (pytester.path / "fixtures" / "data.bin").write_bytes(DATA)
    out = f"{pytester.path}/dist/{{{{ os }}}}-{{{{ arch }}}}"
    text = (f"project: {FIXTURES / 'stdio'}\nbuild: {{output: \"{out}\"}}\n"
            + textwrap.dedent(MATRIX).replace("[scratch, alpine]", "[scratch]"))
    pytester.makefile(".yaml", matrix=text)
    pytester.makepyfile(test_mine="""
        import hashlib
        import pytest

        @pytest.mark.xarch(targets="linux/arm64")
        def test_bytes(xarch_cell):
            data = b"\\x00\\xff\\x80 tail"
            r = xarch_cell.run(["sha256"], stdin=data)
            assert r.stdout == f"sha256 {hashlib.sha256(data).hexdigest()} {len(data)} err=<nil>\\n"
    """)
    r = pytester.runpytest_subprocess("--xarch", "matrix.yaml", "test_mine.py", "-p", "no:cacheprovider", "-v")
    r.assert_outcomes(passed=3)
