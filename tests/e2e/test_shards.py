"""`xrun run --shard I/N` jobs merged with `xrun report merge` tell the same story as one unsharded run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, run_xrun

pytestmark = pytest.mark.e2e

# under a real GitHub job, these runs must not write into that job's summary
NOT_GITHUB = {"GITHUB_ACTIONS": "false"}

# what must be the same whichever job ran a cell or build (durations, logs and `cached` may differ)
CELL_KEYS = ("id", "target", "image", "profile", "cpu", "verdict", "passed", "xfail", "exit_code", "signal", "fix")
BUILD_KEYS = ("target", "verdict", "cause", "artifact")


def merge_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`xrun report merge ...` through the real command line, in a child process."""
    return subprocess.run([sys.executable, "-m", "xarch", "report", "merge", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=120, env={**os.environ, **NOT_GITHUB})


def facts(report: dict[str, Any]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    return ([tuple(c.get(k) for k in CELL_KEYS) for c in report["cells"]],
            [tuple(b.get(k) for k in BUILD_KEYS) for b in report["builds"]])


def unordered(report: dict[str, Any]) -> dict[str, Any]:
    return {**report, "cells": sorted(report["cells"], key=lambda c: c["id"]),
            "builds": sorted(report["builds"], key=lambda b: b["target"])}


@pytest.fixture(scope="module")
def unsharded(tmp_path_factory: pytest.TempPathFactory, probe_src: Path) -> tuple[Path, dict[str, Any]]:
    """A matrix with passing, failing and xfail cells over five targets, and its unsharded report."""
    d = tmp_path_factory.mktemp("shards")
    m = d / "matrix.yaml"
    m.write_text(textwrap.dedent(f"""\
        name: probe
        project: {probe_src}
        build:
          output: "{d}/dist/{{{{ name }}}}-{{{{ os }}}}-{{{{ arch }}}}{{{{ variant_suffix }}}}{{{{ ext }}}}"
        targets: [linux/amd64, linux/amd64/v3, linux/arm/v6, linux/arm/v7, linux/arm64, linux/386]
        profiles: [baseline, pi-zero, {{name: westmere-vm, cpu: {{amd64: Westmere}}}}]
        run: {{args: [hello], expect: {{exit: 0, stdout: "^probe hello$"}}}}
        xfail: [{{target: linux/amd64/v3, profile: westmere-vm, verdict: unsupported-cpu}}]
    """))
    out = d / "full.json"
    p = run_xrun([str(m), "--json", str(out), "-j", "2"], env=NOT_GITHUB)
    assert p.returncode == 1, p.stdout + p.stderr      # arm/v7 on the Pi Zero fails
    return m, json.loads(out.read_text())


def test_the_matrix_has_what_a_merge_must_get_right(unsharded: tuple[Path, dict[str, Any]]) -> None:
    _, full = unsharded
    verdicts = {c["id"]: (c["verdict"], c["passed"]) for c in full["cells"]}
    assert len(verdicts) == 10
    assert verdicts["linux/arm/v7:scratch:pi-zero"] == ("unsupported-cpu", False)
    assert verdicts["linux/amd64/v3:scratch:westmere-vm"] == ("unsupported-cpu", True)    # a held xfail
    assert sum(ok for _, ok in verdicts.values()) == 9


@pytest.mark.parametrize("n", [2, 3])
def test_sharded_runs_merge_into_the_unsharded_report(unsharded: tuple[Path, dict[str, Any]], tmp_path: Path,
                                                      n: int) -> None:
    m, full = unsharded
    parts = []
    for i in range(1, n + 1):
        out = tmp_path / f"s{i}.json"
        p = run_xrun([str(m), "--shard", f"{i}/{n}", "--json", str(out), "-j", "2"], env=NOT_GITHUB)
        assert p.returncode in (0, 1), p.stdout + p.stderr
        parts.append(json.loads(out.read_text()))
    # a real partition: every cell in exactly one shard, each shard building only its own targets
    ids = [c["id"] for r in parts for c in r["cells"]]
    assert sorted(ids) == sorted(c["id"] for c in full["cells"])
    assert all({b["target"] for b in r["builds"]} == {c["target"] for c in r["cells"]} for r in parts)
    assert sum(len(r["builds"]) for r in parts) > len(full["builds"])    # some target built in two shards

    merged_path = tmp_path / "merged.json"
    p = merge_cli(*(str(tmp_path / f"s{i}.json") for i in range(n, 0, -1)), "--shards", str(n),
                  "--json", str(merged_path), "--junit", str(tmp_path / "m.xml"), "--html", str(tmp_path / "m.html"))
    assert p.returncode == 1, p.stdout + p.stderr       # same exit code as the unsharded run
    merged = json.loads(merged_path.read_text())
    # same cells, verdicts and builds, in the plan's order (the merge found the matrix the reports name)
    assert facts(merged) == facts(full)
    assert merged["summary"] == full["summary"]
    assert merged["interrupted"] is False
    assert (tmp_path / "m.xml").is_file() and (tmp_path / "m.html").is_file()


def test_merging_one_full_report_gives_it_back(unsharded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    _, full = unsharded
    src = tmp_path / "full.json"
    src.write_text(json.dumps(full))
    out = tmp_path / "again.json"
    p = merge_cli(str(src), "--json", str(out))
    assert p.returncode == 1, p.stdout + p.stderr
    again = json.loads(out.read_text())
    assert unordered(again) == unordered(full)
    assert again == full        # and the order too: the merge restores the plan's order


def test_a_missing_shard_report_fails_the_merge(unsharded: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    m, _ = unsharded
    out = tmp_path / "s1.json"
    p = run_xrun([str(m), "--shard", "1/2", "--json", str(out)], env=NOT_GITHUB)
    assert p.returncode in (0, 1), p.stdout + p.stderr
    p = merge_cli(str(out), str(tmp_path / "s2.json"), "--json", str(tmp_path / "m.json"))
    assert p.returncode == 2 and "s2.json: no such file" in p.stderr
    p = merge_cli(str(out), "--shards", "2", "--json", str(tmp_path / "m.json"))
    assert p.returncode == 2 and "expected 2 shard reports, got 1" in p.stderr
