"""What a binary under `xrun exec` sees of the host: the files and the environment `go test` expects.

Visible, at their real paths:
- the module (the directory holding go.mod, found upward from the working directory), read-only, so
  `../testdata` works;
- the package directory (the working directory) writable through a scratch copy of its files and its
  testdata/, thrown away afterwards: the host tree is never modified. Sub-directories other than
  testdata stay the module's read-only originals. A package directory over COPY_LIMIT is bound
  read-only instead;
- every path go test hands the binary (`-test.coverprofile`, `-test.cpuprofile`, `-test.memprofile`,
  `-test.blockprofile`, `-test.mutexprofile`, `-test.trace`, `-test.testlogfile`: their directories;
  `-test.outputdir`, `-test.gocoverdir`, `-test.fuzzcachedir`, `$GOCOVERDIR`), read-write, so
  coverage and profiles land where go test reads them;
- a private writable $HOME (/tmp/home) and /tmp.
Nothing else of the host: not its home, /etc, caches or credentials.

The environment is the caller's minus a deny-list (host paths and credentials, DENY_* below), with
HOME and PATH the cell's own. `--env NAME` passes a denied variable anyway, `--env NAME=VALUE` sets
one, and `--no-env` passes only GO*, TEST* and TERM (and what --env names).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["COPY_LIMIT", "ExecView", "cell_env", "denied", "rules", "view_for"]

COPY_LIMIT = 256 << 20
HOME_IN_CELL = "/tmp/home"
DENY_EXACT = frozenset({
    "PATH", "HOME", "TMPDIR", "TEMP", "TMP", "OLDPWD", "SHELL", "SSH_AUTH_SOCK", "SSH_AGENT_PID", "SSH_CONNECTION",
    "SSH_CLIENT", "SSH_TTY", "GPG_AGENT_INFO", "DBUS_SESSION_BUS_ADDRESS", "DISPLAY", "WAYLAND_DISPLAY",
    "KUBECONFIG", "DOCKER_HOST", "DOCKER_CONFIG", "DOCKER_CERT_PATH", "NETRC", "GOROOT", "GOPATH", "GOCACHE",
    "GOMODCACHE", "GOENV", "GOTOOLDIR", "VIRTUAL_ENV", "CONDA_PREFIX", "MAIL", "LS_COLORS"})
DENY_PREFIX = ("LD_", "AWS_", "AZURE_", "ARM_CLIENT", "GOOGLE_", "GCLOUD_", "CLOUDSDK_", "XDG_", "XARCH_",
               "PYTHON", "DYLD_", "ACTIONS_", "RUNNER_")
DENY_WORDS = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_KEY|PRIVATE_KEY")
_DIR_FLAGS = ("outputdir", "gocoverdir", "fuzzcachedir")
_FILE_FLAGS = ("coverprofile", "cpuprofile", "memprofile", "blockprofile", "mutexprofile", "trace", "testlogfile")
_TEST_FLAG = re.compile(r"^--?test\.(\w+)(?:=(.*))?$")


def rules() -> dict[str, object]:
    """The rules above as data: cached plans carry them to the compiled launcher
    (engines/launcher/), which applies them as cell_env and view_for do."""
    return {"deny_exact": sorted(DENY_EXACT), "deny_prefix": list(DENY_PREFIX), "deny_words": DENY_WORDS.pattern,
            "home": HOME_IN_CELL, "copy_limit": COPY_LIMIT, "dir_flags": list(_DIR_FLAGS),
            "file_flags": list(_FILE_FLAGS)}


def denied(name: str) -> bool:
    """Whether a variable stays on the host: a host path or a credential."""
    return name in DENY_EXACT or name.startswith(DENY_PREFIX) or bool(DENY_WORDS.search(name.upper()))


def cell_env(environ: Mapping[str, str], explicit: Sequence[str], no_env: bool) -> dict[str, str]:
    """The variables the binary gets (the cell adds HOME and PATH)."""
    if no_env:
        env = {k: v for k, v in environ.items()
               if (k.startswith(("GO", "TEST")) and not denied(k)) or k == "TERM"}
    else:
        env = {k: v for k, v in environ.items() if not denied(k)}
    for item in explicit:
        name, eq, value = item.partition("=")
        if eq:
            env[name] = value
        elif name in environ:
            env[name] = environ[name]
    env["HOME"] = HOME_IN_CELL
    return env


class ExecView:
    """The binds (host path, path in the cell, writable) of one `xrun exec`, and its scratch dir."""

    def __init__(self, scratch: Path | None = None) -> None:
        self.binds: list[tuple[str, str, bool]] = []
        self.scratch = scratch
        self.notes: list[str] = []

    def close(self) -> None:
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


def _module_root(start: Path) -> Path | None:
    for d in (start, *start.parents):
        if (d / "go.mod").is_file() or (d / "go.work").is_file():
            return d
    return None


def _within(p: Path, d: Path) -> bool:
    return p == d or d in p.parents


def _real(p: Path) -> Path:
    """p with its symlinks resolved as far as it exists (os.path.realpath)."""
    return Path(os.path.realpath(p))


def _writable_paths(args: Sequence[str], env: Mapping[str, str], cwd: Path,
                    module: Path | None) -> list[tuple[Path, bool]]:
    """What go test expects the binary to write, from its -test.* flags and $GOCOVERDIR: (path, is a file).

    A directory in the module is not bound whole (go test's -test.outputdir is where it was run,
    often the module root: that would make the module writable); a file go test wants there
    (`-test.cpuprofile=cpu.out`) is bound on its own, so it lands on the host as it does natively,
    and nothing else does. Directories elsewhere (go test's /tmp/go-build...) are bound whole."""
    inside = module or cwd
    flags: dict[str, str] = {}
    for i, a in enumerate(args):
        m = _TEST_FLAG.match(a)
        if m and m.group(1) in (*_DIR_FLAGS, *_FILE_FLAGS):
            value = m.group(2) if m.group(2) is not None else (args[i + 1] if i + 1 < len(args) else "")
            if value:
                flags[m.group(1)] = value
    outdir = Path(flags["outputdir"]) if "outputdir" in flags else cwd
    if not outdir.is_absolute():
        outdir = cwd / outdir
    out: list[tuple[Path, bool]] = []
    # where a path really is decides (go test names the package dir as $PWD spells it, which may pass
    # through a symlink); the bind keeps the path the binary was given
    for name, value in flags.items():
        if name in _DIR_FLAGS:
            d = Path(value) if os.path.isabs(value) else cwd / value
            if not _within(_real(d), inside) and not _within(cwd, _real(d)):
                out.append((d, False))
            continue
        f = Path(value) if os.path.isabs(value) else outdir / value
        out.append((f, True) if _within(_real(f), inside) or _within(cwd, _real(f).parent) else (f.parent, False))
    if env.get("GOCOVERDIR"):       # relative: to the working directory, as go test means it
        cover = cwd / env["GOCOVERDIR"]
        if not _within(_real(cover), inside):
            out.append((cover, False))
    return [x for x in dict.fromkeys(out) if str(x[0]) != "/"]


def _size(d: Path, limit: int) -> int:
    total = 0
    for root, _dirs, files in os.walk(d):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                continue
            if total > limit:
                return total
    return total


def view_for(cwd: Path, args: Sequence[str], env: Mapping[str, str], scratch: Path) -> ExecView:
    """The binds for a binary run from `cwd` (a package directory) with these args and environment."""
    view = ExecView(scratch=scratch)
    module = _module_root(cwd)
    if module is not None and module != Path("/"):
        view.binds.append((str(module), str(module), False))
    entries = sorted(os.scandir(cwd), key=lambda e: e.name)
    copy_dirs = [e for e in entries if e.is_dir(follow_symlinks=False) and e.name == "testdata"]
    own = [e for e in entries if not e.is_dir(follow_symlinks=False)]
    size = sum(_size(Path(e.path), COPY_LIMIT) for e in copy_dirs) + sum(
        e.stat(follow_symlinks=False).st_size for e in own)
    if size > COPY_LIMIT:
        view.binds.append((str(cwd), str(cwd), False))
        view.notes.append(f"{cwd} is over {COPY_LIMIT >> 20} MiB: bound read-only, not copied")
    else:
        pkg = scratch / "pkg"
        pkg.mkdir()
        for e in own:
            dst = pkg / e.name
            if e.is_symlink():
                os.symlink(os.readlink(e.path), dst)
            elif e.is_file(follow_symlinks=False):
                shutil.copy2(e.path, dst)
        for e in copy_dirs:
            shutil.copytree(e.path, pkg / e.name, symlinks=True)
        view.binds.append((str(pkg), str(cwd), True))
        for e in entries:           # the other sub-directories: the module's read-only originals
            if e.is_dir(follow_symlinks=False) and e.name != "testdata":
                (pkg / e.name).mkdir(exist_ok=True)
                view.binds.append((e.path, str(cwd / e.name), False))
    for path, is_file in _writable_paths(args, env, cwd, module):
        if is_file:
            if not path.parent.is_dir():
                continue
            path.touch(exist_ok=True)       # a bind needs the file; the binary truncates it
            if (scratch / "pkg").is_dir() and _within(_real(path), cwd):     # and its mount point in the copy
                rel = _real(path).relative_to(cwd)
                (scratch / "pkg" / rel).parent.mkdir(parents=True, exist_ok=True)
                (scratch / "pkg" / rel).touch(exist_ok=True)
        else:
            path.mkdir(parents=True, exist_ok=True)
        view.binds.append((str(path), str(path), True))
    home = scratch / "home"
    home.mkdir()
    view.binds.append((str(home), HOME_IN_CELL, True))
    return view
