"""The compiled launcher's Go source (runner/engines/launcher/) is gofmt-clean and passes go vet,
and its constants agree with the Python it mirrors."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from xarch.engines import execlauncher, execplan


def test_gofmt_and_go_vet_are_clean(go_bin: Path, tmp_path: Path) -> None:
    files = execlauncher.sources()
    assert {"go.mod", "main.go"} <= {f.name for f in files}
    r = subprocess.run([str(go_bin.with_name("gofmt")), "-l", *(str(f) for f in files if f.suffix == ".go")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout == "", r.stdout + r.stderr
    for f in files:
        (tmp_path / f.name).write_bytes(f.read_bytes())
    r = subprocess.run([str(go_bin), "vet", "."], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "", "GOWORK": "off"})
    assert r.returncode == 0, r.stderr


def test_the_plan_format_and_the_seccomp_mark_are_pythons() -> None:
    text = "".join(f.read_text() for f in execlauncher.sources())
    assert re.search(r'const planFormat = "(\d+)"', text).group(1) == str(execplan.FORMAT)  # type: ignore[union-attr]
    assert f'const seccompMark = "{execplan.SECCOMP}"' in text
