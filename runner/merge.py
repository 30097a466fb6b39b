"""`xrun report merge`: join the JSON reports of `xrun run --shard I/N` jobs into the report of one run.

The merged report has the shape of contract §3, so JUnit, HTML and the GitHub summary are rendered
from it exactly as `xrun run` renders its own, and its exit code follows the same rule.
"""

from __future__ import annotations

import heapq
import json
import os
from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any

from . import model
from .errors import ConfigError, read_text

# The worse of two disagreeing build verdicts wins; anything unknown counts as worst.


def _severity(verdict: str) -> int:
    v = model.Verdicts.get(verdict)
    return v.severity if v else 3


def summary(builds: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]],
            planned_cells: int) -> dict[str, Any]:
    """The report's summary from its dicts (the one rule, in model)."""
    return model.summary(builds, cells, planned_cells)


def report_passed(report: Mapping[str, Any]) -> bool:
    """The rule of `xrun run`'s exit code (the one rule, in model)."""
    return model.passed(report)


def _merged_order(sequences: Sequence[Sequence[str]]) -> list[str]:
    """One order that keeps every input's own order (each shard's list is a subsequence of the plan's),
    ties broken by name; by name alone if the inputs contradict each other."""
    succ: dict[str, set[str]] = {x: set() for seq in sequences for x in seq}
    indegree = dict.fromkeys(succ, 0)
    for seq in sequences:
        for a, b in pairwise(seq):
            if b not in succ[a]:
                succ[a].add(b)
                indegree[b] += 1
    ready = [x for x, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        x = heapq.heappop(ready)
        out.append(x)
        for y in succ[x]:
            indegree[y] -= 1
            if indegree[y] == 0:
                heapq.heappush(ready, y)
    return out if len(out) == len(succ) else sorted(succ)


def _ordered(keys: list[str], order: Sequence[str] | None) -> list[str]:
    """`keys` in `order` (those it does not name last, in their current order)."""
    if not order:
        return keys
    pos = {k: i for i, k in enumerate(order)}
    return sorted(keys, key=lambda k: pos.get(k, len(pos)))


def _merge_build(copies: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One target built by several shards: identical verdicts keep the first, else the worst wins."""
    worst = max((b for _, b in copies),
                key=lambda b: _severity(str(b.get("verdict"))))
    out = dict(worst)
    verdicts = {str(b.get("verdict")) for _, b in copies}
    if len(verdicts) > 1:
        # a target is built from the same commit in every shard, so disagreement is news (a flaky or
        # runner-dependent build): say so rather than pick one silently
        seen = ", ".join(f"{b.get('verdict')} in {name}" for name, b in copies)
        out["explanation"] = " ".join(x for x in (
            out.get("explanation"), f"The shards disagree about this build ({seen}); the worst is kept.") if x)
    if any(b.get("reproducible") is False for _, b in copies):
        out["reproducible"] = False
    return out


def merge_reports(reports: Sequence[Mapping[str, Any]], *, names: Sequence[str] | None = None,
                  cell_order: Sequence[str] | None = None,
                  build_order: Sequence[str] | None = None) -> dict[str, Any]:
    """Join shard reports into one: builds deduplicated by target, cells unioned, summary recounted.

    Cells come back in `cell_order` (the plan's cell ids) when given, else in the `plan_order` list a
    report carries, else in one order consistent with every shard's own (plan) order. `names` label
    the reports in error messages. Raises ConfigError on a cell that two reports both hold.
    """
    if not reports:
        raise ConfigError("no report to merge", file="command line")
    labels = list(names) if names is not None else [f"report {i + 1}" for i in range(len(reports))]
    matrices = {str(r.get("matrix")) for r in reports}
    if len(matrices) > 1:
        raise ConfigError("the reports come from different matrices ("
                          + ", ".join(f"{n}: {r.get('matrix')}" for n, r in zip(labels, reports, strict=True))
                          + "); merge the shards of one matrix", file="command line")

    cells: dict[str, Mapping[str, Any]] = {}
    owner: dict[str, str] = {}
    for name, r in zip(labels, reports, strict=True):
        for c in r.get("cells") or []:
            cid = str(c["id"])
            if cid in owner:
                raise ConfigError(f"cell {cid} is in both {owner[cid]} and {name}; each cell must come from "
                                  "exactly one shard (was a shard merged twice, or sharded differently?)",
                                  file=name)
            owner[cid] = name
            cells[cid] = c
    order = cell_order or next((r["plan_order"] for r in reports if r.get("plan_order")), None)
    cell_ids = _merged_order([[str(c["id"]) for c in r.get("cells") or []] for r in reports])
    cell_ids = _ordered(cell_ids, order)

    copies: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for name, r in zip(labels, reports, strict=True):
        for b in r.get("builds") or []:
            copies.setdefault(str(b["target"]), []).append((name, b))
    targets = _merged_order([[str(b["target"]) for b in r.get("builds") or []] for r in reports])
    if build_order is None and order:
        # the plan lists cells target by target, so the first cell of each target gives the build order
        build_order = list(dict.fromkeys(str(cells[i]["target"]) for i in cell_ids))
    targets = _ordered(targets, build_order)

    builds = [_merge_build(copies[t]) for t in targets]
    merged_cells = [dict(cells[i]) for i in cell_ids]
    planned = sum(int((r.get("summary") or {}).get("planned_cells", len(r.get("cells") or [])))
                  for r in reports)
    engines = sorted({str(r.get("engine")) for r in reports if r.get("engine") is not None})
    images: dict[str, Any] = {}
    for r in reports:
        images.update(r.get("images") or {})

    # start from the first report so fields this module does not know about survive the merge
    out: dict[str, Any] = dict(reports[0])
    out.update({"version": 1, "interrupted": any(bool(r.get("interrupted")) for r in reports),
                "builds": builds, "cells": merged_cells,
                "summary": summary(builds, merged_cells, planned)})
    left = [i for r in reports for i in ((r.get("summary") or {}).get("interrupted") or [])
            if i not in cells]
    if left:
        out["summary"]["interrupted"] = list(dict.fromkeys(left))
    if engines:
        out["engine"] = ",".join(engines)
    if "images" in out or images:
        out["images"] = images
    return out


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one JSON report; ConfigError (exit 2) naming the file when it is missing or not a report."""
    name = str(path)
    text = read_text(path, missing="no such file (did the shard's job write its --json report?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"not valid JSON: {e.msg}", file=name, line=e.lineno) from None
    if (not isinstance(data, dict) or data.get("version") != 1 or not isinstance(data.get("cells"), list)
            or not isinstance(data.get("builds"), list)):
        raise ConfigError("not an xrun JSON report (version 1 with builds and cells lists)", file=name)
    for key, items in (("cells", data["cells"]), ("builds", data["builds"])):
        need = "id" if key == "cells" else "target"
        if not all(isinstance(x, dict) and need in x for x in items):
            raise ConfigError(f"not an xrun JSON report: an entry of {key} has no '{need}'", file=name)
    return data
