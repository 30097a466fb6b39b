"""The compiled launcher of `xrun exec` (engines/launcher/*.go): built once per install with xarch's own Go toolchain.

`go test -exec 'xrun exec'` starts Python once per test binary: some 40 ms of interpreter, imports
and argument parsing before the sandbox starts, as much as a short test binary runs under qemu.
`xrun exec --launcher [options]` prints the command line of a small static program that does a
cached launch itself and hands everything else to `xrun exec` (no plan yet, an option it does not
know, an exit to explain), so `go test -exec "$(xrun exec --launcher --profile pi4)" ./...` starts
no Python on a passing run. `--install-wrappers` writes wrappers that call it.

It lives in the cache, keyed by its source, the Go toolchain, the plan format and how it starts xrun
(so a reinstall or an edit builds a new one), and is built under a file lock by atomic rename: test
binaries that go test starts in parallel never see a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from .. import paths
from ..errors import InfraError
from . import execplan

SOURCE = Path(__file__).with_name("launcher")          # a Go module: go.mod and *.go, stdlib only
NAME = "xrun-exec"


def sources() -> list[Path]:
    """The launcher's source files, in a fixed order."""
    return sorted(p for p in SOURCE.iterdir() if p.suffix == ".go" or p.name == "go.mod")


def _key(xrun: Sequence[str]) -> str:
    from ..toolchain import go_version

    h = hashlib.sha256()
    for f in sources():
        h.update(f.name.encode() + b"\0" + f.read_bytes())
    h.update(json.dumps([go_version(), execplan.FORMAT, list(xrun)]).encode())
    return h.hexdigest()[:16]


def launcher(xrun: Sequence[str]) -> Path:
    """The launcher's path, built first if this install has none yet; `xrun` is how it starts xrun."""
    from filelock import FileLock

    from .. import proc
    from ..toolchain import GO_FIX, go_bin_dir

    where = paths.cache_dir() / "launcher" / _key(xrun)
    exe = where / NAME
    if exe.is_file():
        return exe
    where.mkdir(parents=True, exist_ok=True)
    with FileLock(str(where / ".lock")):
        if exe.is_file():
            return exe
        with tempfile.TemporaryDirectory(prefix=".build-", dir=where) as d:
            for f in sources():
                (Path(d) / f.name).write_bytes(f.read_bytes())
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-trimpath", "GOWORK": "off", "GO111MODULE": "on",
                   "GOTOOLCHAIN": "local", "GOPROXY": "off"}
            for k in ("GOOS", "GOARCH", "GOAMD64", "GOARM", "GOARM64"):     # the host's own
                env.pop(k, None)
            r = proc.run([os.path.join(go_bin_dir(), "go"), "build", "-ldflags=-s -w", "-o", NAME, "."], cwd=d,
                         env=env, timeout=600)
            if r.returncode != 0:
                raise InfraError(f"could not build xrun exec's launcher: {r.stderr.strip()[-600:]}", GO_FIX)
            (Path(d) / f"{NAME}.json").write_text(json.dumps({"xrun": list(xrun)}))
            os.replace(Path(d) / f"{NAME}.json", where / f"{NAME}.json")     # the config first: the
            os.replace(Path(d) / NAME, exe)                                  # binary's presence means done
    return exe
