"""Merging shard reports, the generated GitHub workflow, and targets from goreleaser's artifacts.json."""

from __future__ import annotations

import copy
import io
import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from conftest import FIXTURES, ROOT, build_goreleaser_binaries
from xarch import cli, expand, gha, goreleaser, merge
from xarch.errors import ConfigError

REPORTS = FIXTURES / "reports"
ARTIFACTS = FIXTURES / "goreleaser" / "artifacts.json"


def load(name: str) -> dict[str, Any]:
    return json.loads((REPORTS / f"{name}.json").read_text())


def shard(report: dict[str, Any], i: int, n: int) -> dict[str, Any]:
    """What `xrun run --shard i/n` reports: cells sorted by id, every n-th, plan order kept; their builds."""
    ids = sorted(c["id"] for c in report["cells"])
    keep = {cid for k, cid in enumerate(ids) if k % n == i - 1}
    r = copy.deepcopy(report)
    r["cells"] = [c for c in r["cells"] if c["id"] in keep]
    targets = {c["target"] for c in r["cells"]}
    r["builds"] = [b for b in r["builds"] if b["target"] in targets]
    r["summary"] = merge.summary(r["builds"], r["cells"], len(r["cells"]))
    return r


def normalised(report: dict[str, Any]) -> dict[str, Any]:
    """The report with its summary counted by merge.summary (the fixtures predate `not_runnable`)."""
    r = copy.deepcopy(report)
    r["summary"] = merge.summary(r["builds"], r["cells"], r["summary"]["planned_cells"])
    return r


# --- merge -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["passing", "failing"])
def test_merging_one_full_report_gives_it_back(name: str) -> None:
    r = normalised(load(name))
    assert merge.merge_reports([r]) == r


@pytest.mark.parametrize("name", ["passing", "failing"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_shards_merge_back_into_the_unsharded_report(name: str, n: int) -> None:
    full = normalised(load(name))
    parts = [shard(full, i, n) for i in range(1, n + 1)]
    merged = merge.merge_reports(parts)
    assert {c["id"]: c for c in merged["cells"]} == {c["id"]: c for c in full["cells"]}
    assert {b["target"]: b for b in merged["builds"]} == {b["target"]: b for b in full["builds"]}
    assert merged["summary"] == full["summary"]
    # without the plan, each shard's own (plan) order is kept
    pos = {c["id"]: k for k, c in enumerate(merged["cells"])}
    for p in parts:
        ids = [c["id"] for c in p["cells"]]
        assert sorted(ids, key=pos.__getitem__) == ids
    # with it, the plan order comes back exactly
    order = [c["id"] for c in full["cells"]]
    assert merge.merge_reports(list(reversed(parts)), cell_order=order) == full


def test_plan_order_carried_by_a_report_is_used() -> None:
    full = normalised(load("passing"))
    parts = [shard(full, i, 3) for i in (1, 2, 3)]
    parts[1]["plan_order"] = [c["id"] for c in full["cells"]]
    merged = merge.merge_reports(parts)
    assert [c["id"] for c in merged["cells"]] == parts[1]["plan_order"]
    assert [b["target"] for b in merged["builds"]] == [b["target"] for b in full["builds"]]


def test_summary_counts_like_a_run() -> None:
    r = load("failing")
    cells = r["cells"][:4]
    cells[0] = {**cells[0], "verdict": "ok", "passed": True}
    cells[1] = {**cells[1], "xfail": "unsupported-cpu", "passed": True}
    cells[2] = {**cells[2], "verdict": "not-runnable", "passed": True}
    builds = [*r["builds"], {**r["builds"][0], "target": "linux/riscv64", "verdict": "build-failed"}]
    assert merge.summary(builds, cells, 6) == {"cells": 4, "ok": 1, "failed": 1, "xfail": 1, "not_runnable": 1,
                                               "builds_failed": 1, "planned_cells": 6}


def test_a_cell_in_two_reports_is_an_error() -> None:
    r = load("failing")
    with pytest.raises(ConfigError, match=r"cell linux/arm/v7:scratch:baseline is in both a\.json and b\.json"):
        merge.merge_reports([r, shard(r, 1, 2)], names=["a.json", "b.json"])


def test_reports_of_different_matrices_are_an_error() -> None:
    a, b = shard(load("failing"), 1, 2), shard(load("failing"), 2, 2)
    b["matrix"] = "other.yaml"
    with pytest.raises(ConfigError, match="different matrices"):
        merge.merge_reports([a, b])


def test_a_build_seen_by_several_shards_is_kept_once_and_the_worst_verdict_wins() -> None:
    full = normalised(load("failing"))
    a, b = shard(full, 1, 2), shard(full, 2, 2)
    shared = {x["target"] for x in a["builds"]} & {x["target"] for x in b["builds"]}
    assert shared, "the fixture must have a target with cells in both shards"
    t = sorted(shared)[0]
    agreeing = merge.merge_reports([a, b])
    assert [x["target"] for x in agreeing["builds"]].count(t) == 1
    assert merge.report_passed(agreeing) is False   # the fixture's cells fail
    bb = next(x for x in b["builds"] if x["target"] == t)
    bb.update(verdict="artifact-mismatch", explanation="the ELF header says EM_X86_64")
    merged = merge.merge_reports([a, b], names=["s1.json", "s2.json"])
    got = next(x for x in merged["builds"] if x["target"] == t)
    assert got["verdict"] == "artifact-mismatch"
    assert "EM_X86_64" in got["explanation"]
    assert "ok in s1.json, artifact-mismatch in s2.json" in got["explanation"]
    assert merged["summary"]["builds_failed"] == 1


def test_interrupted_and_missing_cells_do_not_pass() -> None:
    full = normalised(load("passing"))
    parts = [shard(full, i, 2) for i in (1, 2)]
    assert merge.report_passed(merge.merge_reports(parts))
    parts[1]["interrupted"] = True
    merged = merge.merge_reports(parts)
    assert merged["interrupted"] is True and not merge.report_passed(merged)
    parts[1]["interrupted"] = False
    parts[1]["summary"]["planned_cells"] += 1       # a shard that planned a cell it never ran
    merged = merge.merge_reports(parts)
    assert merged["summary"]["planned_cells"] == len(full["cells"]) + 1
    assert not merge.report_passed(merged)


def _write_shards(tmp_path: Path, report: dict[str, Any], n: int) -> list[str]:
    paths = []
    for i in range(1, n + 1):
        p = tmp_path / f"s{i}.json"
        p.write_text(json.dumps(shard(report, i, n)))
        paths.append(str(p))
    return paths


def test_main_report_writes_every_format_and_exits_like_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    ok = _write_shards(tmp_path, load("passing"), 3)
    assert cli.main(["report", "merge", *ok, "--json", "m.json", "--junit", "m.xml", "--html", "m.html"]) == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["summary"]["cells"] == 7 and m["summary"]["xfail"] == 1
    assert (tmp_path / "m.xml").read_text().startswith("<?xml") and "<html" in (tmp_path / "m.html").read_text()
    assert "merged 3 reports: 7 cells" in capsys.readouterr().out
    bad = _write_shards(tmp_path, load("failing"), 2)
    assert cli.main(["report", "merge", *bad, "--json", "f.json"]) == 1
    assert "linux/arm/v7:scratch:pi-zero unsupported-cpu\n    fix: " in capsys.readouterr().out


def test_main_report_bad_input_exits_2_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    good = _write_shards(tmp_path, load("passing"), 2)
    assert cli.main(["report", "merge", good[0], "missing.json", "--json", "o.json"]) == 2
    assert "missing.json: no such file" in capsys.readouterr().err
    (tmp_path / "broken.json").write_text('{"version": 1, "cells": [')
    assert cli.main(["report", "merge", "broken.json", "--json", "o.json"]) == 2
    assert "broken.json:1: not valid JSON" in capsys.readouterr().err
    (tmp_path / "other.json").write_text('{"hello": "world"}')
    assert cli.main(["report", "merge", "other.json", "--json", "o.json"]) == 2
    assert "other.json: not an xrun JSON report" in capsys.readouterr().err
    assert cli.main(["report", "merge", *good, "--shards", "3", "--json", "o.json"]) == 2
    assert "expected 3 shard reports, got 2" in capsys.readouterr().err
    assert cli.main(["report", "merge", "--json", "o.json"]) == 2
    assert not (tmp_path / "o.json").exists()


def test_main_report_under_github_actions_writes_the_summary_and_annotations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # a real matrix, so the merge restores plan order and annotates the target's line
    (tmp_path / "matrix.yaml").write_text(textwrap.dedent("""\
        name: probe
        project: proj
        targets:
          - linux/arm/v7
          - linux/arm64
          - linux/amd64/v3
        profiles: [baseline, pi-zero, {name: westmere-vm, cpu: {amd64: Westmere}}]
    """))
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_WORKSPACE", str(tmp_path))
    full = load("failing")
    shards = _write_shards(tmp_path, full, 3)
    assert cli.main(["report", "merge", *reversed(shards), "--json", "m.json"]) == 1
    m = json.loads((tmp_path / "m.json").read_text())
    assert [c["id"] for c in m["cells"]] == [c["id"] for c in full["cells"]]
    assert [b["target"] for b in m["builds"]] == [b["target"] for b in full["builds"]]
    text = summary.read_text()
    assert "## xarch `matrix.yaml`: ❌ failed" in text and "| `linux/arm/v7` |" in text
    assert "**fix:** build for what pi-zero" in text
    out = capsys.readouterr().out
    assert "::error file=matrix.yaml,line=4,title=linux/arm/v7%3Ascratch%3Api-zero unsupported-cpu::" in out


# --- gha ---------------------------------------------------------------------------------------------

def _yaml(text: str) -> Any:
    return YAML(typ="safe").load(text)


def _matrix(tmp_path: Path, targets: str) -> str:
    p = tmp_path / "m.yaml"
    p.write_text(f"name: app\ntargets: {targets}\nprofiles: [baseline]\n")
    return str(p)


@pytest.fixture
def in_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository checkout with ci/matrix.yaml (4 cells) as the cwd."""
    (tmp_path / "ci").mkdir()
    _matrix(tmp_path / "ci", "[linux/amd64, linux/arm/v7, linux/arm64, linux/386]")
    (tmp_path / "ci" / "m.yaml").rename(tmp_path / "ci" / "matrix.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("n", [1, 3])
def test_workflow_runs_one_job_per_shard_and_merges(n: int, in_repo: Path) -> None:
    wf = _yaml(gha.workflow("ci/matrix.yaml", n))
    job = wf["jobs"]["xarch"]
    include = job["strategy"]["matrix"]["include"]
    assert [x["shard"] for x in include] == [f"{i}/{n}" for i in range(1, n + 1)]
    assert {x["runner"] for x in include} == {"ubuntu-24.04"}
    assert len({x["artifact"] for x in include}) == n and all("/" not in x["artifact"] for x in include)
    assert job["strategy"]["fail-fast"] is False
    run = next(s for s in job["steps"] if s.get("id") == "xarch")
    assert run["uses"] == "./"
    assert run["with"] == {"matrix": "ci/matrix.yaml", "shard": "${{ matrix.shard }}", "python-version": "3.11",
                           "report-dir": "xarch-report"}
    upload = job["steps"][-1]
    assert upload["uses"].startswith("actions/upload-artifact@")
    assert upload["with"]["path"] == "${{ steps.xarch.outputs.json }}"
    assert upload["if"] == "${{ !cancelled() }}"
    merge_job = wf["jobs"]["merge"]
    assert merge_job["needs"] == "xarch" and merge_job["if"] == "${{ !cancelled() }}"
    steps = merge_job["steps"]
    assert any(s.get("uses", "").startswith("actions/download-artifact@") for s in steps)
    assert any(s.get("run") == "pip install ." for s in steps)
    cmd = next(s["run"] for s in steps if "xrun report merge" in s.get("run", ""))
    assert f"--shards {n} " in cmd and "--matrix ci/matrix.yaml" in cmd
    assert "--json xarch-report/report.json" in cmd and "--junit " in cmd and "--html " in cmd
    assert set(wf["on"]) == {"push", "pull_request", "workflow_dispatch"}


def test_workflow_with_a_published_action_and_another_python(in_repo: Path) -> None:
    wf = _yaml(gha.workflow("ci/matrix.yaml", 2, python="3.10", uses="xarch-org/xarch@v0"))
    run = next(s for s in wf["jobs"]["xarch"]["steps"] if s.get("id") == "xarch")
    assert run["uses"] == "xarch-org/xarch@v0"
    assert run["with"]["python-version"] == "3.10"      # a string: YAML would read 3.10 as 3.1
    steps = wf["jobs"]["merge"]["steps"]
    assert any(s.get("run") == "pip install git+https://github.com/xarch-org/xarch@v0" for s in steps)
    assert gha.pip_spec("o/r/sub@v1") == "git+https://github.com/o/r@v1#subdirectory=sub"


def test_native_arm_puts_all_arm_shards_on_arm_runners(tmp_path: Path) -> None:
    from xarch import matrix

    m = _matrix(tmp_path, "[linux/amd64, linux/arm/v7, linux/arm64, linux/arm/v6]")
    plan = matrix.load(m)
    for n in (1, 2, 4):
        include = _yaml(gha.workflow(m, n, native_arm=True))["jobs"]["xarch"]["strategy"]["matrix"]["include"]
        for i, x in enumerate(include, 1):
            arches = {c.target.arch for c in expand.select(plan, (), (i, n)).cells}
            want = "ubuntu-24.04-arm" if arches <= {"arm", "arm64"} else "ubuntu-24.04"
            assert x["runner"] == want, (n, i, arches)
    runners = [x["runner"] for x in _yaml(gha.workflow(m, 4, native_arm=True))["jobs"]["xarch"]["strategy"]
               ["matrix"]["include"]]
    assert runners.count("ubuntu-24.04") == 1 and runners.count("ubuntu-24.04-arm") == 3
    assert "ubuntu-24.04-arm" not in gha.workflow(m, 4)


def test_gha_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = _matrix(tmp_path, "[linux/amd64, linux/arm64]")
    assert cli.main(["gha", m, "--shards", "2", "--native-arm"]) == 0
    wf = _yaml(capsys.readouterr().out)
    assert [x["runner"] for x in wf["jobs"]["xarch"]["strategy"]["matrix"]["include"]] == [
        "ubuntu-24.04", "ubuntu-24.04-arm"]
    assert cli.main(["gha", m, "--shards", "3"]) == 2
    assert "more than the matrix's 2 cells" in capsys.readouterr().err
    assert cli.main(["gha", m, "--shards", "0"]) == 2
    assert cli.main(["gha", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such file" in capsys.readouterr().err
    out = tmp_path / ".github" / "workflows" / "xarch.yml"
    assert cli.main(["gha", m, "-o", str(out)]) == 0
    assert _yaml(out.read_text())["jobs"]["xarch"]["strategy"]["matrix"]["include"][0]["shard"] == "1/1"


def test_workflow_of_the_example_matrix_parses() -> None:
    text = gha.workflow(str(ROOT / "matrix.yaml"), 3, native_arm=True)
    assert text.startswith("# Generated by `xrun gha ")
    YAML(typ="rt").load(io.StringIO(text))


# --- goreleaser ----------------------------------------------------------------------------------------

EXPECTED = [
    ("linux/amd64", "dist/greet_linux_amd64_v1/greet"),
    ("linux/amd64/v3", "dist/greet_linux_amd64_v3/greet"),
    ("linux/arm/v6", "dist/greet_linux_arm_6/greet"),
    ("linux/arm", "dist/greet_linux_arm_7/greet"),
    ("linux/arm64", "dist/greet_linux_arm64_v8.0/greet"),
    ("linux/386", "dist/greet_linux_386_sse2/greet"),
    ("linux/riscv64", "dist/greet_linux_riscv64_rva20u64/greet"),
    ("linux/ppc64le", "dist/greet_linux_ppc64le_power8/greet"),
    ("linux/mips64le/softfloat", "dist/greet_linux_mips64le_softfloat/greet"),
    ("darwin/arm64", "dist/greet_darwin_arm64_v8.0/greet"),
    ("windows/amd64", "dist/greet_windows_amd64_v1/greet.exe"),
]


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    """The fixture artifacts.json where goreleaser writes it: <project>/dist/artifacts.json."""
    p = tmp_path / "proj" / "dist" / "artifacts.json"
    p.parent.mkdir(parents=True)
    shutil.copy(ARTIFACTS, p)
    return p


def test_goreleaser_binaries_map_to_targets_with_absolute_paths(artifacts: Path) -> None:
    skipped: list[str] = []
    got = goreleaser.targets_from_goreleaser(artifacts, skipped=skipped)
    project = artifacts.parent.parent.resolve()
    assert got == [(spec, project / rel) for spec, rel in EXPECTED]
    assert all(p.is_absolute() for _, p in got)
    # the loong64 binary is reported, not silently dropped; archives, checksums and the upload copy are not binaries
    assert skipped == ["dist/greet_linux_loong64/greet: xarch has no target linux/loong64"]
    # every spec is one the matrix accepts
    from xarch import matrix

    m = artifacts.parent.parent / "m.yaml"
    m.write_text("name: greet\ntargets: [" + ", ".join(s for s, _ in got) + "]\n")
    assert [b.target.spec for b in matrix.load(m).builds] == [s for s, _ in got]


def test_goreleaser_relative_to_the_cwd_and_filtered_by_build_id(artifacts: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(artifacts.parent.parent)
    assert goreleaser.targets_from_goreleaser("dist/artifacts.json")[0][1] == (
        artifacts.parent / "greet_linux_amd64_v1" / "greet").resolve()
    assert goreleaser.targets_from_goreleaser(artifacts, build_ids={"other"}) == []
    assert len(goreleaser.targets_from_goreleaser(artifacts, build_ids={"greet"})) == len(EXPECTED)


def test_goreleaser_two_builds_of_one_target_need_a_build_id(artifacts: Path) -> None:
    data = json.loads(artifacts.read_text())
    twin = copy.deepcopy(next(a for a in data if a.get("target") == "linux_arm64_v8.0" and a["internal_type"] == 4))
    twin.update(name="greetd", path="dist/greetd_linux_arm64_v8.0/greetd")
    twin["extra"].update(ID="greetd", Binary="greetd")
    artifacts.write_text(json.dumps([*data, twin]))
    with pytest.raises(ConfigError, match=r"two binaries are both linux/arm64: .*'greet'.*'greetd'"):
        goreleaser.targets_from_goreleaser(artifacts)
    got = dict(goreleaser.targets_from_goreleaser(artifacts, build_ids={"greetd"}))
    assert got == {"linux/arm64": (artifacts.parent / "greetd_linux_arm64_v8.0" / "greetd").resolve()}


@pytest.mark.parametrize(("body", "message"), [
    (None, "artifacts.json: no such file (run `goreleaser build`"),
    ("[{", "artifacts.json:1: not valid JSON"),
    ('{"name": "x"}', "not a goreleaser artifacts.json"),
    ('[{"type": "Binary", "internal_type": 4, "path": "dist/x", "goos": "linux", "goarch": "arm", "goarm": "8"}]',
     "artifact 0 (dist/x): goarm '8' is not a level of arm xarch knows; known: v5, v6, v7"),
    ('[{"type": "Binary", "goos": "linux", "goarch": "arm"}]', "a Binary artifact has no path"),
])
def test_goreleaser_bad_input_is_a_config_error(artifacts: Path, body: str | None, message: str) -> None:
    if body is None:
        artifacts.unlink()
    else:
        artifacts.write_text(body)
    with pytest.raises(ConfigError) as e:
        goreleaser.targets_from_goreleaser(artifacts)
    assert message in str(e.value) and e.value.exit_code == 2


@pytest.mark.e2e
def test_goreleaser_targets_match_real_go_binaries_built_at_its_paths(artifacts: Path, go_bin: Path) -> None:
    """Build greet the way goreleaser would for each Binary entry, then check each binary's header and Go
    build info against the target it was mapped to."""
    from xarch import platforms
    from xarch.artifact import check_against_target, inspect

    build_goreleaser_binaries(artifacts, go_bin)
    got = goreleaser.targets_from_goreleaser(artifacts)
    assert [s for s, _ in got] == [s for s, _ in EXPECTED]
    for spec, path in got:
        goos, goarch, *variant = spec.split("/")
        level = variant[0] if variant else platforms.arch(goarch).default_level
        assert check_against_target(inspect(path), goos, goarch, level) is None, spec
