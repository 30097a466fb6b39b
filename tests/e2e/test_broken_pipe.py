"""A program whose output is piped into `head` dies of SIGPIPE: its output was closed early, not a crash
(issue 18). Real Go binaries under qemu and natively, their stdout piped into `sh -c "$PAGER"` in alpine.
"""

from __future__ import annotations

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e

MATRIX = """
    name: stdio
    targets: [linux/amd64, linux/arm64]
    images: [alpine]
    profiles: [baseline, host]
    run:
      args: [pager, "100000"]
      env: {{PAGER: "{pager}"}}
      expect: {{stdout: '^line 0\\nline 1\\nline 2\\n$'}}
"""
CELLS = ["linux/amd64:alpine:baseline", "linux/amd64:alpine:host", "linux/arm64:alpine:baseline"]


def test_output_piped_into_head_is_not_a_crash_and_the_fix_passes(xrun_matrix):
    r = xrun_matrix(MATRIX.format(pager="head -n 3"), project=FIXTURES / "stdio")
    assert r.rc == 1, r.out[-3000:]
    for cid in CELLS:
        c = r.cell(cid)
        assert (c["verdict"], c["signal"]) == ("exit-status", 13), (cid, c["verdict"], c["explanation"])
        assert c["stdout"] == "line 0\nline 1\nline 2\n", c["stdout"]      # head's output: it did its job
        assert "killed by SIGPIPE" in c["explanation"] and "this is not a crash" in c["explanation"]
        assert "pipe whose reader had already exited" in c["explanation"]
        assert "memory corruption" not in c["fix"] and "sed -n 1,3p" in c["fix"]
    assert "crashed" not in r.out
    # the fix: a reader that takes all of the output; the program then finishes
    r = xrun_matrix(MATRIX.format(pager="sed -n 1,3p"), project=FIXTURES / "stdio")
    assert r.rc == 0, r.out[-3000:]
    assert [r.cell(cid)["verdict"] for cid in CELLS] == ["ok"] * 3


@pytest.mark.parametrize("mode", ["pool", "container"])
def test_the_docker_engine_says_the_same(docker_daemon, xrun_matrix, mode):
    # amd64 only: an arm64 cell's /bin/sh child needs the host's binfmt_misc handlers under docker
    r = xrun_matrix(MATRIX.format(pager="head -n 3"), "--engine", "docker", "--only", "target=linux/amd64",
                    project=FIXTURES / "stdio", env={"XARCH_DOCKER_MODE": mode})
    for cid in CELLS[:2]:
        c = r.cell(cid)
        assert (c["verdict"], c["signal"]) == ("exit-status", 13), (cid, c["verdict"], c["explanation"])
        assert "this is not a crash" in c["explanation"]
