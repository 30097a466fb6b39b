"""The HTML report in a real headless Chromium: the DOM it builds, the inline script, a screenshot."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES
from xarch.output.html import write_html

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-dev-shm-usage"]  # containers often have a tiny /dev/shm


@pytest.fixture(scope="module")
def chromium() -> str:
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    if not exe:
        pytest.skip(f"{CHROMIUM} is missing: install the Debian package `chromium` (and fonts-dejavu-core) "
                    "to test the HTML report in a real browser")
    return exe


def _report(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "reports" / f"{name}.json").read_text())


def _chromium(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "profile"
    profile.mkdir(exist_ok=True)
    p = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_dom_has_a_square_per_cell_and_the_verdicts(chromium: str, tmp_path: Path) -> None:
    report = _report("failing")
    page = tmp_path / "report.html"
    write_html(report, page)
    dom = _chromium(chromium, tmp_path, "--dump-dom", page.as_uri()).stdout
    assert len(re.findall(r"\bdata-cell-id=", dom)) == len(report["cells"]) == 5
    assert 'id="grid"' in dom
    assert re.search(r'data-cell-id="linux/arm/v7:scratch:pi-zero"[^>]*>\s*<a [^>]*>\s*'
                     r'<span class="verdict">unsupported-cpu ✗</span>', dom)
    assert "build for what pi-zero (arm1176) can run" in dom


def test_clicking_through_to_a_cell_opens_its_evidence(chromium: str, tmp_path: Path) -> None:
    report = _report("passing")
    page = tmp_path / "report.html"
    write_html(report, page)
    n = next(i for i, c in enumerate(report["cells"]) if c["xfail"])
    closed = _chromium(chromium, tmp_path, "--dump-dom", page.as_uri()).stdout
    assert re.search(rf'<details class="ev v-xfail" id="ev-{n}">', closed)
    # the grid links to #ev-N; the page's script opens that card and marks the square
    opened = _chromium(chromium, tmp_path, "--dump-dom", f"{page.as_uri()}#ev-{n}").stdout
    assert re.search(rf'<details class="ev v-xfail[^"]*" id="ev-{n}" open="">', opened)
    assert re.search(r'<td class="v v-xfail sel" data-cell-id="linux/arm:scratch:pi-zero"', opened)


def test_screenshot_renders(chromium: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    write_html(_report("failing"), page)
    shot = tmp_path / "shot.png"
    _chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,900", page.as_uri())
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
