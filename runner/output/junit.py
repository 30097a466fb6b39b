"""JUnit XML from the report dict: one suite of builds, one of cells, for CI test-result viewers.

The shape follows the Jenkins xunit `junit-10.xsd` (the de facto schema that GitLab, Jenkins and the
GitHub test-report actions accept), which is what the tests validate against.
"""

from __future__ import annotations

import os
import re
import signal
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any

from .. import paths

# XML 1.0 Char production; anything else (NUL, ESC from colour codes, lone surrogates) makes the
# whole file unparseable, so it is dropped rather than escaped.
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
LOG_TAIL = 8 * 1024


def xml_text(s: object) -> str:
    """`s` as text that XML 1.0 can hold."""
    return _INVALID_XML.sub("", str(s)).replace("\r\n", "\n")


def exit_status_text(cell: Mapping[str, Any]) -> str | None:
    """How a cell's process ended: "exit status 3", "signal 4 (SIGILL)", or None if it never ran."""
    if cell.get("signal") is not None:
        n = int(cell["signal"])
        try:
            return f"signal {n} ({signal.Signals(n).name})"
        except ValueError:
            return f"signal {n}"
    if cell.get("exit_code") is not None:
        return f"exit status {cell['exit_code']}"
    return None


def _tail(s: str | None, n: int = LOG_TAIL) -> str:
    s = s or ""
    return s if len(s) <= n else "[...]" + s[-n:]


def _secs(x: Any) -> str:
    # three decimals and no exponent: the schema's SUREFIRE_TIME pattern rejects "1e-05"
    return f"{float(x or 0.0):.3f}"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k: xml_text(v) for k, v in attrs.items()})
    if text:
        el.text = xml_text(text)
    return el


def _block(*parts: tuple[str, str | None]) -> str:
    """Labelled paragraphs, skipping empty ones."""
    return "\n\n".join(f"{label}:\n{body.rstrip()}" if label else body.rstrip()
                       for label, body in parts if body and body.strip())


def _cell_outcome(c: Mapping[str, Any]) -> tuple[str | None, str]:
    """(failure|error|skipped|None, message) for one cell."""
    v = str(c["verdict"])
    if c.get("passed"):
        return None, v
    if v == "not-runnable":
        return "skipped", v
    if v == "infra-error":
        return "error", v
    return "failure", v


def _cell_case(suite: ET.Element, c: Mapping[str, Any]) -> str | None:
    kind, verdict = _cell_outcome(c)
    tc = _sub(suite, "testcase", classname=str(c["target"]), name=str(c["id"]), time=_secs(c.get("duration_s")))
    xfail = c.get("xfail")
    status = exit_status_text(c)
    facts = "\n".join(x for x in (
        f"cpu: {c.get('cpu')}" if c.get("cpu") else None,
        status,
        f"how: {c['evidence']['path']}" if c.get("evidence") and c["evidence"].get("path") else None,
        f"fault: {c['evidence']['fault']['line']}" if (c.get("evidence") or {}).get("fault") else None,
        *(f"note: {n}" for n in ((c.get("evidence") or {}).get("notes") or [])),
    ) if x)
    if kind is None:
        note = f"xfail: expected {xfail}, got {verdict}\n" if xfail else ""
        body = _block(("", note + facts), ("explanation", c.get("explanation")), ("fix", c.get("fix")),
                      ("stdout", _tail(c.get("stdout"))), ("stderr", _tail(c.get("stderr"))))
        if body:
            _sub(tc, "system-out", body + "\n")
        return None
    expl = c.get("explanation")
    if xfail and kind == "failure":
        # an xfail cell that failed differently (or passed) is a regression of the guard itself
        expl = f"xfail: expected {xfail}, got {verdict}" + (f". {expl}" if expl else "")
    body = _block(("", expl), ("fix", c.get("fix")), ("", facts),
                  ("stdout (tail)", _tail(c.get("stdout"))), ("stderr (tail)", _tail(c.get("stderr"))))
    # a skip's message is all most viewers show, so it says why; failures keep the verdict as the key
    _sub(tc, kind, body + "\n" if body else None,
         message=(expl or verdict) if kind == "skipped" else verdict, type=verdict)
    return kind


def _build_case(suite: ET.Element, b: Mapping[str, Any]) -> str | None:
    tc = _sub(suite, "testcase", classname="build", name=str(b["target"]), time=_secs(b.get("duration_s")))
    facts = "\n".join(x for x in (
        f"artifact: {b['artifact']}" if b.get("artifact") else None,
        f"header: {b['artifact_facts']}" if b.get("artifact_facts") else None,
        "cached: the artifact was up to date" if b.get("cached") else None,
        f"reproducible: {str(b['reproducible']).lower()}" if b.get("reproducible") is not None else None,
    ) if x)
    if b["verdict"] == "ok":
        body = _block(("", facts), ("log", _tail(b.get("log"))))
        if body:
            _sub(tc, "system-out", body + "\n")
        return None
    verdict = str(b["verdict"])
    kind = f"{verdict} ({b['cause']})" if b.get("cause") else verdict
    body = _block(("", b.get("explanation")), ("fix", b.get("fix")), ("", facts),
                  ("build log (tail)", _tail(b.get("log"))))
    _sub(tc, "failure", body + "\n" if body else None, message=kind, type=verdict)
    return "failure"


def _suite(root: ET.Element, name: str, items: list[Mapping[str, Any]],
           add: Callable[[ET.Element, Mapping[str, Any]], str | None],
           props: Mapping[str, str]) -> dict[str, float]:
    suite = _sub(root, "testsuite", name=name)
    if props:
        pe = _sub(suite, "properties")
        for k, v in props.items():
            _sub(pe, "property", name=k, value=v)
    counts = {"tests": 0.0, "failures": 0.0, "errors": 0.0, "skipped": 0.0, "time": 0.0}
    for it in items:
        kind = add(suite, it)
        counts["tests"] += 1
        counts["time"] += float(it.get("duration_s") or 0.0)
        if kind == "failure":
            counts["failures"] += 1
        elif kind == "error":
            counts["errors"] += 1
        elif kind == "skipped":
            counts["skipped"] += 1
    for k in ("tests", "failures", "errors", "skipped"):
        suite.set(k, str(int(counts[k])))
    suite.set("time", _secs(counts["time"]))
    return counts


def to_junit_xml(report: Mapping[str, Any]) -> str:
    """The report as a JUnit XML document (a string with its XML declaration)."""
    root = ET.Element("testsuites", {"name": "xarch"})
    props = {k: str(report[k]).lower() if isinstance(report[k], bool) else str(report[k])
             for k in ("matrix", "engine", "xarch", "interrupted") if report.get(k) is not None}
    bc = _suite(root, "xarch builds", list(report.get("builds") or []), _build_case, props)
    cc = _suite(root, "xarch cells", list(report.get("cells") or []), _cell_case, props)
    # junit-10.xsd allows no `skipped` on <testsuites>; each <testsuite> carries its own
    for k in ("tests", "failures", "errors"):
        root.set(k, str(int(bc[k] + cc[k])))
    root.set("time", _secs(bc["time"] + cc["time"]))
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_junit(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write the report as JUnit XML to `path`."""
    paths.write_text_atomic(path, to_junit_xml(report))
