"""All CI-provider output: GitHub Actions log groups, error annotations and the job's step summary.

Everything here reads the report dict (contract §3), so the CLI, the pytest plugin and the Action
produce the same text. Nothing here decides a verdict or an exit code.
"""

# no `from __future__ import annotations`: it would clash with the public `annotations()` below

import os
import re
import secrets
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from .. import model
from .text import plain

# GitHub rejects a step summary over 1 MiB; stay well under it and say what was left out.
SUMMARY_BUDGET = 900 * 1024
OUTPUT_TAIL_LINES = 20


def in_github_actions(env: Mapping[str, str] = os.environ) -> bool:
    """True inside a GitHub Actions job (the runner sets GITHUB_ACTIONS=true)."""
    return env.get("GITHUB_ACTIONS") == "true"


def _utf8(s: str) -> str:
    """`s` without lone surrogates (undecodable process output in a report loaded from JSON)."""
    return s.encode("utf-8", "replace").decode("utf-8")


def escape_data(s: str) -> str:
    """A workflow command's message, escaped as @actions/core does."""
    # encoded as @actions/core does; then every other control character made visible (an escape
    # sequence in a cell's stderr must not colour or rewrite the CI log)
    return plain(_utf8(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A"))


def escape_property(s: str) -> str:
    """A workflow command's property value (file, title, ...): also ':' and ',' end it otherwise."""
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def _out(out: TextIO | None) -> TextIO:
    # resolved per call, not as a default argument, so a redirected or captured sys.stdout is honoured
    return out if out is not None else sys.stdout


@contextmanager
def group(title: str, out: TextIO | None = None) -> Iterator[None]:
    """Fold what is printed inside into one collapsible log group."""
    o = _out(out)
    o.write(f"::group::{' '.join(title.splitlines())}\n")
    o.flush()
    try:
        yield
    finally:
        o.write("::endgroup::\n")
        o.flush()


@contextmanager
def stop_commands(out: TextIO | None = None) -> Iterator[None]:
    """Print untrusted text (a binary's stdout, a build log) inside this, so a line such as
    `::add-mask::` or `::error::` in it is shown, not obeyed by the runner."""
    o = _out(out)
    token = secrets.token_hex(16)
    o.write(f"::stop-commands::{token}\n")
    o.flush()
    try:
        yield
    finally:
        o.write(f"::{token}::\n")
        o.flush()


# --- annotations -----------------------------------------------------------------------------------

def _message(explanation: str | None, fix: str | None, fallback: str) -> str:
    msg = (explanation or fallback).strip()
    return f"{msg.rstrip('.')}. fix: {fix.strip()}" if fix else msg


def _command(level: str, file: str, line: int | None, title: str, message: str) -> str:
    props = [f"file={escape_property(file)}"]
    if line is not None:
        props.append(f"line={int(line)}")
    props.append(f"title={escape_property(title)}")
    return f"::{level} {','.join(props)}::{escape_data(message)}"


def annotations(report: Mapping[str, Any], matrix_path: str, target_lines: Mapping[str, int]) -> list[str]:
    """One `::error` per failing build and cell, placed on the matrix line that declares its target.

    `matrix_path` should be relative to the repository root (GitHub resolves it against the
    checkout); a target missing from `target_lines` is annotated on the file without a line.
    A not-runnable cell is a `::warning`: its cause (usually the failed build) has its own error.
    """
    lines: list[str] = []
    for b in report.get("builds") or []:
        if b.get("verdict") == "ok":
            continue
        v = str(b["verdict"]) + (f" ({b['cause']})" if b.get("cause") else "")
        lines.append(_command("error", matrix_path, target_lines.get(str(b["target"])),
                              f"build {b['target']} {v}",
                              _message(b.get("explanation"), b.get("fix"), f"the build of {b['target']} failed")))
    for c in report.get("cells") or []:
        if c.get("passed"):
            continue
        verdict = str(c["verdict"])
        title = f"{c['id']} {verdict}" + (f" (xfail expected {c['xfail']})" if c.get("xfail") else "")
        fallback = (f"expected {c['xfail']} but got {verdict}" if c.get("xfail")
                    else f"the cell's verdict is {verdict}")
        lines.append(_command("warning" if verdict == "not-runnable" else "error", matrix_path,
                              target_lines.get(str(c["target"])), title,
                              _message(c.get("explanation"), c.get("fix"), fallback)))
    return lines


# --- step summary ----------------------------------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~#])")


def md_escape(s: object) -> str:
    """Text that Markdown (and the HTML it allows) shows literally, on one line."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(plain(s).split()))


def _code(s: object) -> str:
    """An inline code span that survives backticks inside."""
    text = " ".join(plain(s).split())
    ticks = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _fence(s: str) -> str:
    """A fenced block whose fence is longer than any backtick run in `s`."""
    tail = "\n".join(s.rstrip("\n").splitlines()[-OUTPUT_TAIL_LINES:])
    fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", tail)), default=0) + 1)
    return f"{fence}text\n{tail}\n{fence}"


def _mark(c: Mapping[str, Any]) -> str:
    verdict = str(c["verdict"])
    if c.get("passed"):
        return f"✅ xfail ({verdict})" if c.get("xfail") else "✅ ok"
    if verdict == "not-runnable":
        return "⏭️ not-runnable"
    return f"❌ {verdict}"


def _grid(cells: list[Mapping[str, Any]]) -> list[str]:
    rows = list(dict.fromkeys(str(c["target"]) for c in cells))
    cols = list(dict.fromkeys((str(c["image"]), str(c["profile"])) for c in cells))
    by = {(str(c["target"]), str(c["image"]), str(c["profile"])): c for c in cells}
    out = ["| target | " + " | ".join(f"{md_escape(i)}<br>{md_escape(p)}" for i, p in cols) + " |",
           "|---|" + "---|" * len(cols)]
    for t in rows:
        sq = []
        for i, p in cols:
            c = by.get((t, i, p))
            sq.append("·" if c is None else
                      _mark(c) + (f"<br><sub>{md_escape(c['cpu'])}</sub>" if c.get("cpu") else ""))
        out.append(f"| {_code(t)} | " + " | ".join(sq) + " |")
    return out


def _failure(kind: str, name: str, item: Mapping[str, Any]) -> str:
    verdict = str(item["verdict"]) + (f" ({item['cause']})" if item.get("cause") else "")
    if item.get("xfail"):
        verdict += f", xfail expected {item['xfail']}"
    parts = [f"#### {kind} {_code(name)}: {md_escape(verdict)}", ""]
    if item.get("explanation"):
        parts += [md_escape(item["explanation"]), ""]
    if (fault := (item.get("evidence") or {}).get("fault")) and fault.get("line"):
        parts += [f"**fault:** {md_escape(fault['line'])}", ""]
    if item.get("fix"):
        parts += [f"**fix:** {md_escape(item['fix'])}", ""]
    outputs = [(label, str(item.get(key) or "")) for label, key in
               (("stdout", "stdout"), ("stderr", "stderr"), ("build log", "log"))]
    for label, text in outputs:
        if text.strip():
            # blank lines around the fence: GitHub only parses Markdown inside <details> when separated
            parts += [f"<details><summary>{label} (tail)</summary>", "", _fence(text), "", "</details>", ""]
    return "\n".join(parts)


def step_summary_markdown(report: Mapping[str, Any]) -> str:
    """The job summary: verdict line, totals, the grid, then each failure with its explanation and fix."""
    builds = list(report.get("builds") or [])
    cells = list(report.get("cells") or [])
    s = dict(report.get("summary") or {})
    bad_builds = [b for b in builds if not model.build_ok(b)]
    bad_cells = [c for c in cells if not c.get("passed")]
    interrupted = bool(report.get("interrupted"))
    passed = model.passed(report)
    state = "⚠️ interrupted" if interrupted else ("✅ passed" if passed else "❌ failed")
    out = [f"## xarch {_code(report.get('matrix', 'matrix'))}: {state}", "",
           f"{s.get('cells', len(cells))} cells: {s.get('ok', 0)} ok, {s.get('xfail', 0)} xfail, "
           f"{s.get('failed', len(bad_cells))} failed; {len(builds)} builds, {len(bad_builds)} not ok", ""]
    if interrupted:
        out += [f"Interrupted: {len(cells)} of {s.get('planned_cells', len(cells))} planned cells ran.", ""]
    if bad_builds:
        out += ["| build | verdict |", "|---|---|"]
        out += [f"| {_code(b['target'])} | ❌ {md_escape(b['verdict'])} |" for b in bad_builds]
        out.append("")
    if cells:
        out += [*_grid(cells), ""]
    text = _utf8("\n".join(out))
    failures = [_failure("build", str(b["target"]), b) for b in bad_builds]
    failures += [_failure("cell", str(c["id"]), c) for c in bad_cells]
    failures = [_utf8(f) for f in failures]
    if failures:
        text += "\n### Failures\n\n"
    for n, f in enumerate(failures):
        if len((text + f).encode()) > SUMMARY_BUDGET:
            text += f"\n_{len(failures) - n} more failures left out to fit GitHub's summary limit; see the report._\n"
            break
        text += f + "\n"
    return text


# --- entry point -----------------------------------------------------------------------------------

def emit(report: Mapping[str, Any], matrix_path: str, target_lines: Mapping[str, int],
         env: Mapping[str, str] = os.environ, out: TextIO | None = None) -> bool:
    """Inside GitHub Actions: append the step summary and print the annotations. Returns whether it did.

    A summary file that cannot be written becomes a `::warning` rather than an exception: CI output
    is a side channel and must not change the run's outcome.
    """
    if not in_github_actions(env):
        return False
    o = _out(out)
    path = env.get("GITHUB_STEP_SUMMARY")
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(step_summary_markdown(report) + "\n")
        except OSError as e:
            o.write(f"::warning title=xarch::{escape_data(f'could not write the step summary {path}: {e}')}\n")
    for line in annotations(report, matrix_path, target_lines):
        o.write(line + "\n")
    o.flush()
    return True


def workspace_relative(p: Path, env: Mapping[str, str] = os.environ) -> str:
    """A path as GitHub annotations want it: relative to the workspace (else the cwd)."""
    base = Path(env.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()
    try:
        return str(p.resolve().relative_to(base))
    except ValueError:
        return str(p)
