"""The JSON report of contract §3 (extended, never renamed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import __version__, paths
from ..build import BuildResult
from ..model import Evidence
from ..pipeline import CellResult, RunResult
from ..plan import Cell
from ..rootfs import load_definitions

STREAM_TAIL = 8 * 1024


def _tail(s: str, n: int = STREAM_TAIL) -> str:
    return s if len(s) <= n else "[...]" + s[-n:]


def _rel(p: Path | None, base: Path) -> str | None:
    if p is None:
        return None
    try:
        return str(p.relative_to(base))
    except ValueError:
        return str(p)


def build_json(b: BuildResult, base: Path) -> dict[str, Any]:
    return {"target": b.job.target.spec, "verdict": b.verdict, "cause": b.cause,
            "artifact": _rel(b.artifact or b.job.output, base), "reproducible": b.reproducible,
            "duration_s": round(b.duration_s, 3), "explanation": b.explanation, "fix": b.fix,
            "log": b.log, "cached": b.cached,
            "artifact_facts": b.facts.describe() if b.facts else None}


def cell_json(r: CellResult) -> dict[str, Any]:
    c, ev, v = r.cell, r.evidence, r.verdict
    return {"id": c.id, "target": c.target.spec, "image": c.image, "profile": c.profile.name,
            "cpu": ev.cpu if ev else (c.cpu or "native"),
            "verdict": v.verdict, "exit_code": ev.exit_code if ev else None,
            "signal": ev.signal if ev else None, "duration_s": round(ev.duration_s, 3) if ev else 0.0,
            "stdout": _tail(ev.stdout) if ev else "", "stderr": _tail(ev.stderr) if ev else "",
            "explanation": v.explanation, "fix": v.fix,
            "xfail": c.xfail, "passed": r.passed,
            "evidence": {"ran": ev.ran, "path": ev.path, "emulator": ev.emulator,
                         "loader_missing": ev.loader_missing, "tcg_missing": list(ev.tcg_missing),
                         "notes": list(ev.notes), "timed_out": ev.timed_out,
                         "limits": ev.limits.as_json() if ev.limits else None,
                         "output_limited": ev.output_limited, "hardening": list(ev.hardening),
                         **({"children": ev.children} if ev.children else {}),
                         **({"user": ev.user} if ev.user else {}),
                         **({"fault": ev.fault.as_json()} if ev.fault else {}),
                         **({"core_note": ev.core_note} if ev.core_note else {}),
                         **({"symbols": [{"name": n, "version": v} for n, v in ev.symbols]}
                            if ev.symbols else {}),
                         **({"image_libc": ev.image_libc} if ev.image_libc else {}),
                         **({"machine": machine_json(c)} if c.machine is not None else {}),
                         **_foreign_json(ev), **dict(ev.extra),
                         "artifact": ev.artifact.describe()} if ev else None}


def machine_json(c: Cell) -> dict[str, Any]:
    """A machine profile's CPU for the cell's arch: the resolved -cpu, what the machine has, what qemu cannot give."""
    m = c.machine
    assert m is not None
    return {"profile": c.profile.name, "source": c.profile.source, "cpu": m.cpu, "features": sorted(m.features),
            "not_emulated": list(m.missing), "extra": list(m.extra), "notes": list(m.notes)}


def _foreign_json(ev: Evidence) -> dict[str, str]:
    """What the foreign runners recorded, under the keys the report has always used."""
    keys = (("refused", ev.refusal), ("runner", ev.foreign_runner), ("pe_machine", ev.pe_machine),
            ("node", ev.node_version), ("wasm_go", ev.wasm_go), ("wasm_exec_go", ev.wasm_exec_go),
            ("wasm_exec", ev.wasm_exec))
    return {k: v for k, v in keys if v is not None}


def summary(res: RunResult) -> dict[str, Any]:
    # contract §7: the cells an interrupted run did not finish, by id, in plan order
    return {**res.summary(), **({"interrupted": unfinished(res)} if res.interrupted else {})}


def unfinished(res: RunResult) -> list[str]:
    done = {c.cell.id for c in res.cells}
    return [c.id for c in res.plan.cells if c.id not in done]


def images_json(names: list[str]) -> dict[str, Any]:
    """Per image used: whether it is the exact image or a rebuilt equivalent, and what differs."""
    if set(names) <= {"scratch"}:
        return {}               # nothing to say, and no definition to parse
    try:
        defs = load_definitions()
    except Exception as e:  # a broken definition must not cost the report
        return {n: {"error": str(e)} for n in names}
    out: dict[str, Any] = {}
    for n in names:
        base, _, form = n.partition(":")
        d = defs.get(base)
        if d is not None:
            out[n] = {"exact": False, "reference": d.reference.image + (f":{form}" if form else ""),
                      "digest": d.reference.digest, "fidelity": d.fidelity}
            if form in d.forms:
                out[n]["form"] = d.forms[form].config()
    return out


def to_json(res: RunResult, matrix_display: str) -> dict[str, Any]:
    base = res.plan.project
    used = list(dict.fromkeys(c.image for c in res.plan.cells if c.image != "none"))
    return {"version": 1, "matrix": matrix_display, "xarch": __version__, "engine": res.engine,
            "interrupted": res.interrupted, "images": {**images_json(
                [n for n in used if n not in res.plan.image_sources]),
                **{n: {"exact": True, "from": res.plan.image_sources[n].text} for n in used
                   if n in res.plan.image_sources}},
            **({"plan_notes": list(res.plan.notes)} if res.plan.notes else {}),
            "builds": [build_json(b, base) for b in res.builds],
            "cells": [cell_json(c) for c in res.cells],
            "summary": summary(res)}


def write_json(res: RunResult, path: str | Path, matrix_display: str) -> None:
    """Write atomically, so a reader (or an interrupt) never sees half a report."""
    write_json_dict(to_json(res, matrix_display), path)


def write_json_dict(report: dict[str, Any], path: str | Path) -> None:
    """Write a report dict atomically (readable: a published report is read by others)."""
    paths.write_text_atomic(path, json.dumps(report, indent=2) + "\n")
