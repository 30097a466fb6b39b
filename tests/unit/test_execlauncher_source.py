"""The compiled launcher's Go source (runner/engines/execlauncher.go) is gofmt-clean and passes go vet,
and its constants agree with the Python it mirrors."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from xarch.engines import execlauncher, execplan


def test_gofmt_and_go_vet_are_clean(go_bin: Path, tmp_path: Path) -> None:
    src = execlauncher.SOURCE
    r = subprocess.run([str(go_bin.with_name("gofmt")), "-l", str(src)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    (tmp_path / "main.go").write_bytes(src.read_bytes())
    (tmp_path / "go.mod").write_text("module xarch/launcher\n\ngo 1.21\n")
    r = subprocess.run([str(go_bin), "vet", "."], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "", "GOWORK": "off"})
    assert r.returncode == 0, r.stderr


def test_the_plan_format_and_the_seccomp_mark_are_pythons() -> None:
    text = execlauncher.SOURCE.read_text()
    assert re.search(r'const planFormat = "(\d+)"', text).group(1) == str(execplan.FORMAT)  # type: ignore[union-attr]
    assert f'const seccompMark = "{execplan.SECCOMP}"' in text
