"""JUnit, HTML and GitHub Actions output from recorded reports (tests/fixtures/reports/, real xrun runs)."""

from __future__ import annotations

import copy
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES
from xarch.output import github as ci
from xarch.output import html, junit

REPORTS = FIXTURES / "reports"
XSD = FIXTURES / "junit" / "junit-10.xsd"


def load(name: str) -> dict[str, Any]:
    return json.loads((REPORTS / f"{name}.json").read_text())


@pytest.fixture
def passing() -> dict[str, Any]:
    """The README's example matrix: 7 cells, one held xfail (linux/arm on a Pi Zero)."""
    return load("passing")


@pytest.fixture
def failing() -> dict[str, Any]:
    """The probe exiting 3 everywhere: 3 exit-status and 2 unsupported-cpu cells."""
    return load("failing")


def _cell(base: dict[str, Any], **kw: Any) -> dict[str, Any]:
    c = copy.deepcopy(base)
    c.update(kw)
    c["id"] = f"{c['target']}:{c['image']}:{c['profile']}"
    return c


@pytest.fixture
def mixed(failing: dict[str, Any]) -> dict[str, Any]:
    """The failing report plus every other outcome a renderer must tell apart, and hostile text."""
    r = copy.deepcopy(failing)
    base = r["cells"][0]
    r["builds"].append({"target": "linux/riscv64", "verdict": "build-failed", "cause": "cgo-cross-compiler-missing",
                        "artifact": "dist/probe-linux-riscv64", "reproducible": None, "duration_s": 0.4,
                        "explanation": "the build command failed with exit status 1; the log ends with:\n"
                                       "cgo: C compiler \"gcc\" not found",
                        "fix": "set cc: zig on the target", "cached": False, "artifact_facts": None,
                        "log": "$ go build .\n\x1b[31mcgo: C compiler \"gcc\" not found\x1b[0m\x00\n"})
    r["cells"] += [
        _cell(base, target="linux/riscv64", profile="baseline", cpu="rv64", verdict="not-runnable",
              exit_code=None, signal=None, stdout="", stderr="", evidence=None, passed=False,
              explanation="not run: the build of linux/riscv64 failed (cgo)", fix="fix the build first (see builds)"),
        _cell(base, target="linux/arm64", profile="pi4", cpu="cortex-a72", verdict="infra-error", exit_code=None,
              evidence=None, passed=False, explanation="qemu-aarch64-static is missing",
              fix="apt-get install qemu-user-static"),
        _cell(base, target="linux/arm64", image="alpine", cpu="cortex-a53", verdict="missing-loader",
              exit_code=None, passed=False, explanation="PT_INTERP /lib/ld-linux-aarch64.so.1 is not in alpine",
              fix="CGO_ENABLED=0"),
        _cell(base, target="linux/amd64/v3", image="alpine", cpu="Haswell", verdict="ok", exit_code=0,
              passed=False, xfail="unsupported-cpu", explanation=None, fix=None,
              stdout="<script>alert('x')</script> | a&b ]]> \x07bell\ud800\n"),
        _cell(base, target="linux/arm/v7", image="alpine", profile="pi-zero", cpu="arm1176",
              verdict="unsupported-cpu", exit_code=None, signal=4, passed=True, xfail="unsupported-cpu"),
        _cell(base, target="linux/amd64/v3", profile="avx512", cpu="Skylake-Server", verdict="emulation-unsupported",
              passed=False, explanation="qemu TCG lacks avx512f", fix="test on real hardware"),
    ]
    return r


# --- JUnit -------------------------------------------------------------------------------------------

def _schema() -> Any:
    # imported here, not skipped when missing: it is a dev dependency, and a silent skip would hide
    # a schema regression; without it only these tests fail, not the whole module
    import xmlschema

    return xmlschema.XMLSchema(str(XSD))


def _suites(xml: str) -> dict[str, ET.Element]:
    root = ET.fromstring(xml.encode())
    assert root.tag == "testsuites"
    return {s.get("name", ""): s for s in root.findall("testsuite")}


@pytest.mark.parametrize("name", ["passing", "failing", "mixed"])
def test_junit_is_valid_against_the_jenkins_junit_10_schema(name: str, request: pytest.FixtureRequest) -> None:
    _schema().validate(junit.to_junit_xml(request.getfixturevalue(name)))


def test_junit_has_a_suite_of_builds_and_a_suite_of_cells(failing: dict[str, Any]) -> None:
    suites = _suites(junit.to_junit_xml(failing))
    assert set(suites) == {"xarch builds", "xarch cells"}
    builds = suites["xarch builds"].findall("testcase")
    assert [(t.get("classname"), t.get("name")) for t in builds] == [
        ("build", "linux/arm/v7"), ("build", "linux/arm64"), ("build", "linux/amd64/v3")]
    cells = suites["xarch cells"].findall("testcase")
    assert [(t.get("classname"), t.get("name")) for t in cells] == [(c["target"], c["id"]) for c in failing["cells"]]
    assert cells[0].get("time") == "0.134"


def test_junit_failed_cell_carries_verdict_explanation_fix_and_output(failing: dict[str, Any]) -> None:
    cells = _suites(junit.to_junit_xml(failing))["xarch cells"].findall("testcase")
    f = cells[1].find("failure")
    assert f is not None and f.get("message") == f.get("type") == "unsupported-cpu"
    body = f.text or ""
    assert "killed by SIGILL" in body and "fix:\nbuild for what pi-zero" in body
    assert "signal 4 (SIGILL)" in body and "stderr (tail):\nqemu: uncaught target signal 4" in body
    assert "probe exiting 3" in (cells[0].findtext("failure") or "")


def test_junit_held_xfail_passes_with_a_note(passing: dict[str, Any]) -> None:
    suites = _suites(junit.to_junit_xml(passing))
    cells = suites["xarch cells"]
    assert (cells.get("tests"), cells.get("failures"), cells.get("errors"), cells.get("skipped")) == ("7", "0", "0", "0")
    xf = next(t for t in cells.findall("testcase") if t.get("name") == "linux/arm:scratch:pi-zero")
    assert xf.find("failure") is None and xf.find("skipped") is None
    assert (xf.findtext("system-out") or "").startswith("xfail: expected unsupported-cpu, got unsupported-cpu")


def test_junit_outcomes_and_counts(mixed: dict[str, Any]) -> None:
    xml = junit.to_junit_xml(mixed)
    suites = _suites(xml)
    by = {t.get("name"): t for t in suites["xarch cells"].findall("testcase")}
    assert by["linux/riscv64:scratch:baseline"].find("skipped") is not None
    assert by["linux/arm64:scratch:pi4"].find("error") is not None
    assert by["linux/arm64:alpine:baseline"].findtext("failure") is not None
    broken = by["linux/amd64/v3:alpine:baseline"].find("failure")
    assert broken is not None and broken.get("type") == "ok"
    assert (broken.text or "").startswith("xfail: expected unsupported-cpu, got ok")
    assert list(by["linux/arm/v7:alpine:pi-zero"]) == [by["linux/arm/v7:alpine:pi-zero"][0]]  # system-out only
    c = suites["xarch cells"]
    assert (c.get("tests"), c.get("failures"), c.get("errors"), c.get("skipped")) == ("11", "8", "1", "1")
    b = suites["xarch builds"]
    assert (b.get("tests"), b.get("failures")) == ("4", "1")
    bf = next(t for t in b.findall("testcase") if t.get("name") == "linux/riscv64").find("failure")
    assert bf is not None and bf.get("type") == "build-failed"
    assert bf.get("message") == "build-failed (cgo-cross-compiler-missing)" and "set cc: zig" in (bf.text or "")
    root = ET.fromstring(xml.encode())
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("15", "9", "1")


def test_junit_strips_characters_xml_cannot_hold(mixed: dict[str, Any]) -> None:
    xml = junit.to_junit_xml(mixed)
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]", xml)
    ET.fromstring(xml.encode())  # parses: nothing unescaped leaked through
    assert "[31mcgo: C compiler" in xml and "&lt;script&gt;" in xml


def test_write_junit_writes_a_readable_file_atomically(tmp_path: Path, failing: dict[str, Any]) -> None:
    out = tmp_path / "sub" / "junit.xml"
    junit.write_junit(failing, out)
    assert out.read_text(encoding="utf-8").startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert out.stat().st_mode & 0o044  # not mkstemp's 0600: CI artifact servers must read it
    assert [p.name for p in out.parent.iterdir()] == ["junit.xml"]


# --- HTML --------------------------------------------------------------------------------------------

def test_html_template_ships_next_to_the_module() -> None:
    assert (Path(html.__file__).with_name("templates") / html.TEMPLATE).is_file()


def test_html_grid_has_one_square_per_cell_with_its_colour(mixed: dict[str, Any]) -> None:
    page = html.to_html(mixed)
    assert page.count('id="grid"') == 1
    squares = {cid: css for css, cid in re.findall(r'<td class="v v-(\w+)" data-cell-id="([^"]+)"', page)}
    assert len(squares) == len(mixed["cells"]) == page.count("data-cell-id=")
    assert squares["linux/arm/v7:scratch:baseline"] == "fail"
    assert squares["linux/arm/v7:scratch:pi-zero"] == "cpu"
    assert squares["linux/arm/v7:alpine:pi-zero"] == "xfail"
    assert squares["linux/amd64/v3:alpine:baseline"] == "fail"   # an xfail cell that passed unexpectedly
    assert squares["linux/arm64:alpine:baseline"] == "format"
    assert squares["linux/riscv64:scratch:baseline"] == "skip"
    assert squares["linux/amd64/v3:scratch:avx512"] == "emu"


def test_html_shows_totals_builds_and_evidence(failing: dict[str, Any], mixed: dict[str, Any]) -> None:
    page = html.to_html(failing)
    assert 'class="badge failed"' in page and "<b>5</b>failed" in page
    assert page.count('<tr data-build="') == 3
    assert page.count('<details class="ev') == 5 and page.count("\" open>") == 5  # failures start expanded
    assert "build for what pi-zero (arm1176) can run" in page and "signal 4 (SIGILL)" in page
    page = html.to_html(mixed)
    assert "set cc: zig on the target" in page and "build-failed (cgo-cross-compiler-missing)" in page
    assert "the matrix expects unsupported-cpu; got ok, so the cell fails" in page


def test_html_passing_report(passing: dict[str, Any]) -> None:
    page = html.to_html(passing)
    assert 'class="badge passed"' in page and page.count("data-cell-id=") == 7
    assert page.count("\" open>") == 0


def test_html_escapes_report_text_and_references_nothing_external(mixed: dict[str, Any]) -> None:
    page = html.to_html(mixed)
    assert "<script>alert" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert page.count("<script>") == 1  # only the page's own
    assert not re.search(r"""(?:src|href|url)\s*[=(]\s*["']?(?!#|data:)[a-z]+:""", page, re.I)
    assert "default-src 'none'" in page


def test_write_html_survives_undecodable_output(mixed: dict[str, Any], tmp_path: Path) -> None:
    html.write_html(mixed, tmp_path / "r.html")  # a lone surrogate from the report's JSON must not crash
    assert "a&amp;b ]]&gt;" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_html_interrupted_report_says_so(failing: dict[str, Any], tmp_path: Path) -> None:
    failing["interrupted"] = True
    failing["summary"]["planned_cells"] = 9
    html.write_html(failing, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'class="badge interrupted"' in page and "5 of 9 planned" in page


def test_html_empty_report() -> None:
    page = html.to_html({"version": 1, "matrix": "m.yaml", "builds": [], "cells": [], "summary": {}})
    assert "No cells ran." in page and "data-cell-id" not in page


# --- GitHub Actions ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "expected"), [({"GITHUB_ACTIONS": "true"}, True), ({"GITHUB_ACTIONS": "false"}, False),
                                               ({}, False), ({"CI": "true"}, False)])
def test_in_github_actions(env: dict[str, str], expected: bool) -> None:
    assert ci.in_github_actions(env) is expected


def test_workflow_command_escaping() -> None:
    assert ci.escape_data("50%\r\ndone: a,b") == "50%25%0D%0Adone: a,b"
    assert ci.escape_property("linux/arm:scratch:pi-zero, 50%\n") == "linux/arm%3Ascratch%3Api-zero%2C 50%25%0A"


def test_annotations_for_failing_cells(failing: dict[str, Any]) -> None:
    lines = ci.annotations(failing, "ci/matrix.yaml", {"linux/arm/v7": 4, "linux/arm64": 5, "linux/amd64/v3": 6})
    assert len(lines) == 5
    assert lines[1] == (
        "::error file=ci/matrix.yaml,line=4,title=linux/arm/v7%3Ascratch%3Api-zero unsupported-cpu::"
        "killed by SIGILL (illegal instruction) under -cpu arm1176 (emulator said: 'qemu: uncaught target signal 4 "
        "(Illegal instruction) - core dumped'). The binary was built for arm GOARM=7; qemu CPU model arm1176 "
        "(runs up to arm v6) lacks instructions it uses. fix: build for what pi-zero (arm1176) can run: target "
        "linux/arm/v6 (GOARM=6) instead of v7; keep a separate v7 artifact only for machines you know have it")
    assert ",line=6," in lines[4] and "GOAMD64=v2" in lines[4]


def test_annotations_none_when_all_passed(passing: dict[str, Any]) -> None:
    assert ci.annotations(passing, "matrix.yaml", {}) == []


def test_annotations_for_builds_and_other_outcomes(mixed: dict[str, Any]) -> None:
    lines = ci.annotations(mixed, "matrix.yaml", {"linux/riscv64": 9})
    assert all("\n" not in x and "\r" not in x for x in lines)
    assert lines[0].startswith("::error file=matrix.yaml,line=9,title=build linux/riscv64 build-failed "
                               "(cgo-cross-compiler-missing)::the build command failed with exit status 1; "
                               "the log ends with:%0Acgo: C compiler")
    assert lines[0].endswith(". fix: set cc: zig on the target")
    by = {x.split("title=")[1].split(" ")[0]: x for x in lines[1:]}
    assert by["linux/riscv64%3Ascratch%3Abaseline"].startswith("::warning file=matrix.yaml,line=9,")
    assert "title=linux/amd64/v3%3Aalpine%3Abaseline ok (xfail expected unsupported-cpu)::expected " \
           "unsupported-cpu but got ok" in by["linux/amd64/v3%3Aalpine%3Abaseline"]
    assert "linux/arm/v7%3Aalpine%3Api-zero" not in by  # the held xfail
    assert len(lines) == 1 + 10


def test_step_summary_grid_and_failures(failing: dict[str, Any]) -> None:
    md = ci.step_summary_markdown(failing)
    assert md.startswith("## xarch `matrix.yaml`: ❌ failed\n")
    assert "| target | scratch<br>baseline | scratch<br>pi-zero | scratch<br>westmere-vm |" in md
    assert "| `linux/arm64` | ❌ exit-status<br><sub>cortex-a53</sub> | · | · |" in md
    assert "#### cell `linux/amd64/v3:scratch:westmere-vm`: unsupported-cpu" in md
    assert "**fix:** build for what westmere-vm (Westmere) can run" in md
    assert "```text\nThis program can only be run on AMD64 processors" in md


def test_step_summary_passing(passing: dict[str, Any]) -> None:
    md = ci.step_summary_markdown(passing)
    assert "✅ passed" in md and "✅ xfail (unsupported-cpu)<br><sub>arm1176</sub>" in md
    assert "Failures" not in md


def test_step_summary_escapes_markdown_and_html(mixed: dict[str, Any]) -> None:
    mixed["cells"][-3]["explanation"] = "<img src=x onerror=alert(1)> | *not bold* `x`"
    md = ci.step_summary_markdown(mixed)
    assert not re.search(r"(?<!\\)<img", md) and r"\<img src=x onerror=alert(1)\> \| \*not bold\* \`x\`" in md
    assert "| `linux/riscv64` | ❌ build-failed |" in md and "⏭️ not-runnable" in md
    mixed["cells"][0]["stdout"] = "```\ninjected\n```\n"
    assert "````text\n```\ninjected\n```\n````" in ci.step_summary_markdown(mixed)


def test_step_summary_fits_githubs_limit(failing: dict[str, Any]) -> None:
    big = failing["cells"][0]
    failing["cells"] = [_cell(big, target=f"linux/t{i}", explanation="x" * 4000) for i in range(600)]
    md = ci.step_summary_markdown(failing)
    assert len(md.encode()) < 1024 * 1024 and "more failures left out" in md


def test_group_and_stop_commands() -> None:
    out = io.StringIO()
    with ci.group("builds\nsecond line", out=out):
        out.write("inside\n")
    assert out.getvalue() == "::group::builds second line\ninside\n::endgroup::\n"
    out = io.StringIO()
    with pytest.raises(RuntimeError), ci.stop_commands(out=out):
        raise RuntimeError
    start, end = out.getvalue().splitlines()
    token = start.removeprefix("::stop-commands::")
    assert len(token) == 32 and end == f"::{token}::"


def test_emit_outside_github_actions_does_nothing(failing: dict[str, Any], tmp_path: Path) -> None:
    out, summary = io.StringIO(), tmp_path / "summary.md"
    assert ci.emit(failing, "matrix.yaml", {}, env={"GITHUB_STEP_SUMMARY": str(summary)}, out=out) is False
    assert out.getvalue() == "" and not summary.exists()


def test_emit_in_github_actions_appends_summary_and_prints_annotations(failing: dict[str, Any],
                                                                       tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    out = io.StringIO()
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    assert ci.emit(failing, "matrix.yaml", {"linux/arm/v7": 3}, env=env, out=out) is True
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("# earlier step\n## xarch `matrix.yaml`: ❌ failed")
    printed = out.getvalue().splitlines()
    assert printed == ci.annotations(failing, "matrix.yaml", {"linux/arm/v7": 3})
    assert printed[0].startswith("::error file=matrix.yaml,line=3,title=linux/arm/v7%3Ascratch%3Abaseline ")


def test_emit_survives_an_unwritable_summary(failing: dict[str, Any], tmp_path: Path) -> None:
    out = io.StringIO()
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "missing" / "summary.md")}
    assert ci.emit(failing, "matrix.yaml", {}, env=env, out=out) is True
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("::warning title=xarch::could not write the step summary") and len(lines) == 6


def test_every_view_agrees_a_run_with_an_unreproducible_build_failed(passing: dict[str, Any]) -> None:
    """xrun run exits 1 when a build the matrix asked to be reproducible is not; the merge, the step
    summary and the HTML page used to call that run passed (each had its own copy of the rule)."""
    from xarch import merge, model

    rep = copy.deepcopy(passing)
    rep["builds"][0]["reproducible"] = False
    assert model.passed(passing) and not model.passed(rep)
    assert merge.report_passed(rep) is False
    assert "❌ failed" in ci.step_summary_markdown(rep)
    page = html.to_html(rep)
    assert html.to_html(passing) != page and "passed" not in page.split("<h1", 1)[1].split("</h1>", 1)[0]
    merged = merge.merge_reports([rep], names=["a.json"])
    assert merged["summary"]["builds_failed"] == 1 and not merge.report_passed(merged)


def test_a_not_runnable_cell_is_not_counted_ok_by_the_console(tmp_path: Path) -> None:
    """The console's totals are the report's: a not-runnable cell (a darwin build: only the build is
    checked) is not 'ok' (the console counted it so; the JSON did not)."""
    from rich.console import Console

    from xarch import matrix
    from xarch.classify import Verdict
    from xarch.output import console as ui
    from xarch.pipeline import CellResult, RunResult

    (tmp_path / "m.yaml").write_text("name: a\ntargets: [darwin/arm64]\n")
    plan = matrix.load(tmp_path / "m.yaml")
    res = RunResult(plan, "local")
    res.cells += [CellResult(c, Verdict("not-runnable", "darwin: only the build is checked", None), None)
                  for c in plan.cells]
    assert all(c.passed for c in res.cells)
    out = io.StringIO()
    ui.render(Console(file=out, width=200), res)
    assert "1 cells: 0 ok, 0 xfail, 0 failed, 1 not run" in out.getvalue(), out.getvalue()
    assert res.summary()["ok"] == 0 and res.summary()["not_runnable"] == 1
