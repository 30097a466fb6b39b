"""What a build reads, as its cache key: an edit go build never sees (README.md, a comment in
matrix.yaml, pytest's .pytest_cache) costs no build, and an edit it does see always costs one.

For a plain `go build` the files come from `go list -deps -json` run with the target's GOOS/GOARCH and
the command's own flags (build tags and GOOS/GOARCH choose the files): the compiled and embedded
files of every non-standard package (standard ones are the toolchain's), go.mod/go.sum/go.work and
vendor/modules.txt. With them go the toolchain's identity, the Go-relevant environment and, where
go build stamps it, the VCS state (revision, tags, modified).

`go list` costs ~0.2 s a target, so its answer is kept per target and reused while every file it was
read from has the same content and every directory it looked in holds the same names: a new file in
a package directory may be compiled, and an edit to an ignored file may flip its build constraint.

What this cannot model keys on the whole project tree instead, as every build did before: a shell
command, `before` steps, a command other than go build, -toolexec or -overlay (they read files
go list does not name), cgo (C headers may come from anywhere in the project) and a repository of a
VCS other than git.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import proc
from .plan import BuildJob
from .toolchain import go_bin_dir, go_version

RECORD_VERSION = 1
# the compiled (and embedded) files of a package; its Ignored* files only decide when to ask go list again
COMPILED = ("GoFiles", "CgoFiles", "CFiles", "CXXFiles", "MFiles", "HFiles", "FFiles", "SFiles",
            "SwigFiles", "SwigCXXFiles", "SysoFiles", "EmbedFiles")
IGNORED = ("IgnoredGoFiles", "IgnoredOtherFiles")
LIST_FIELDS = ("ImportPath", "Dir", "Standard", "Module", "Error", "DepsErrors", "EmbedPatterns",
               *COMPILED, *IGNORED)
# go build flags that take a value in the next argument (-o is build's own: go list has none)
VALUE_FLAGS = frozenset({"C", "p", "covermode", "coverpkg", "asmflags", "buildmode", "compiler", "gccgoflags",
                         "gcflags", "installsuffix", "ldflags", "mod", "modfile", "overlay", "pgo", "pkgdir",
                         "tags", "toolexec", "o"})
# flags whose files go list cannot name: the build reads what they point at
OPAQUE_FLAGS = frozenset({"toolexec", "overlay"})
# environment go build reads besides GO*/CGO_*; and GO* variables that never change what it writes
TOOL_ENV = frozenset({"CC", "CXX", "FC", "AR", "PKG_CONFIG", "GCCGO"})
INERT_ENV = frozenset({"GOCACHE", "GOTMPDIR", "GOMAXPROCS", "GOGC", "GOMEMLIMIT", "GOTRACEBACK"})
VCS_DIRS = (".git", ".hg", ".svn", ".bzr", ".fslckout", "_FOSSIL_")
SKIP_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "__pycache__"})
RACY_NS = 2_000_000_000     # a file changed this recently may change again without its stat showing it
_NEXT_OBJECT = re.compile(r"\S")


@dataclass(frozen=True)
class GoBuild:
    """A build command that is a plain `go build`: what go list needs to name the same files."""

    flags: tuple[str, ...]          # the build flags minus -o
    packages: tuple[str, ...]
    buildvcs: str                   # the -buildvcs value: "auto" unless the command or GOFLAGS says


def parse_go_build(argv: Sequence[str], env: Mapping[str, str]) -> GoBuild | None:
    """Pure: the command as a go build whose inputs go list can name, or None (the project tree counts)."""
    if len(argv) < 2 or Path(argv[0]).name != "go" or argv[1] != "build":
        return None
    flags: list[str] = []
    settings: dict[str, str] = {}
    rest = list(argv[2:])
    while rest and rest[0].startswith("-") and rest[0] != "-":
        tok = rest.pop(0)
        if tok == "--":
            break
        name, eq, value = tok.lstrip("-").partition("=")
        if not eq and name in VALUE_FLAGS:
            if not rest:
                return None
            value = rest.pop(0)
        settings[name] = value if (eq or name in VALUE_FLAGS) else "true"
        if name != "o":
            flags.extend([tok, value] if not eq and name in VALUE_FLAGS else [tok])
    for tok in env.get("GOFLAGS", "").split():     # GOFLAGS takes only -flag=value forms
        name, _eq, value = tok.lstrip("-").partition("=")
        settings.setdefault(name, value or "true")
    if OPAQUE_FLAGS & settings.keys() or any(p.startswith("-") for p in rest):
        return None
    return GoBuild(tuple(flags), tuple(rest) or (".",), settings.get("buildvcs", "auto"))


def go_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment variables go build reads, with the go env file (`go env -w`) they default from."""
    out = {k: v for k, v in env.items()
           if (k.startswith(("GO", "CGO_")) or k in TOOL_ENV) and k not in INERT_ENV}
    envfile = env.get("GOENV") or os.path.join(env.get("XDG_CONFIG_HOME") or
                                               os.path.join(env.get("HOME", "/"), ".config"), "go", "env")
    if envfile != "off" and os.path.isfile(envfile):
        out["<GOENV file>"] = file_sha256(Path(envfile))
    return out


def toolchain_id() -> str:
    """The toolchain builds use: its version and which binary, as installed (the standard library is its)."""
    go = Path(go_bin_dir()) / "go"
    st = go.stat()
    return f"{go_version()} {go} {st.st_size} {st.st_mtime_ns}"


@dataclass(frozen=True, kw_only=True)
class Listing:
    """What one `go list -deps` answer means for the key: the files to hash, and what to watch."""

    compiled: tuple[str, ...]       # every file whose content the build reads (absolute paths)
    watched: tuple[str, ...]        # compiled + the files go list decided from (ignored files, go.work)
    dirs: tuple[str, ...]           # directories where a new file would change the answer
    trees: tuple[str, ...]          # directories where a new file or directory would (a module's vendor/)
    walk: tuple[str, ...]           # embedding package dirs: every directory under them counts
    cgo: bool                       # a package runs cgo (its C headers may come from anywhere)


def listing_from(pkgs: Iterable[Mapping[str, Any]], cwd: Path) -> Listing | None:
    """Pure: go list -deps -json objects -> the files a build reads, or None if go list reported an error."""
    compiled: set[str] = set()
    watched: set[str] = set()
    dirs: set[str] = set()
    trees: set[str] = set()
    walk: set[str] = set()
    cgo = False
    for p in pkgs:
        if p.get("Error") or p.get("DepsErrors"):
            return None
        if p.get("Standard"):
            continue
        d = p.get("Dir")
        if not d:
            return None
        dirs.add(d)
        for kind in COMPILED:
            compiled.update(os.path.join(d, f) for f in p.get(kind) or ())
        for kind in IGNORED:
            watched.update(os.path.join(d, f) for f in p.get(kind) or ())
        if p.get("CgoFiles") or p.get("SwigFiles") or p.get("SwigCXXFiles"):
            cgo = True
        if p.get("EmbedPatterns"):
            walk.add(d)
        # go build -pgo=auto (the default) reads the main package's default.pgo
        compiled.add(os.path.join(d, "default.pgo"))
        mod = p.get("Module") or {}
        if mod.get("Dir"):
            # a vendor/ dir appearing there switches the build to -mod=vendor
            trees.add(os.path.join(mod["Dir"], "vendor"))
            compiled.add(os.path.join(mod["Dir"], "vendor", "modules.txt"))
        if mod.get("GoMod"):
            gomod = mod["GoMod"]
            compiled.update((gomod, gomod[:-len(".mod")] + ".sum" if gomod.endswith(".mod") else gomod + ".sum"))
    # go looks for go.work from the working directory up; one appearing anywhere there changes the build
    for d in (cwd, *cwd.parents):
        compiled.update((str(d / "go.work"), str(d / "go.work.sum")))
    watched |= compiled
    return Listing(compiled=tuple(sorted(compiled)), watched=tuple(sorted(watched)), dirs=tuple(sorted(dirs)),
                   trees=tuple(sorted(trees)), walk=tuple(sorted(walk)), cgo=cgo)


def file_sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _stat(path: str) -> list[int] | None:
    """A regular file's size, mtime, ctime and inode (None if there is none at path)."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _names(d: str, subdirs: bool) -> str | None:
    """A directory's entry names as one digest (None if it does not exist). A package compiles files of
    its own directory only, so its subdirectories (dist/, .pytest_cache) count only where asked."""
    try:
        with os.scandir(d) as it:
            names = sorted(e.name for e in it if subdirs or not e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return None
    return hashlib.sha256("\0".join(names).encode()).hexdigest()


def _walk_dirs(root: str) -> list[str]:
    """Every directory under an embedding package (a nested module is not the package's to embed)."""
    out = [root]
    for dirpath, dirnames, _files in os.walk(root):
        dirnames[:] = sorted(n for n in dirnames if n not in SKIP_DIRS
                             and not os.path.exists(os.path.join(dirpath, n, "go.mod")))
        out.extend(os.path.join(dirpath, n) for n in dirnames)
    return out


class Record:
    """One target's go list answer on disk, with the stat and content digest of every file it came from.

    A stat that still matches is trusted, except for a file changed within RACY_NS of being hashed:
    its stat is kept as unknown, so the next run hashes it again (git's "racily clean" rule)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, list_key: str) -> dict[str, Any] | None:
        """The stored answer if it was made for this go list invocation and nothing it read changed."""
        try:
            rec = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("v") != RECORD_VERSION or rec.get("list_key") != list_key:
            return None
        try:
            return self._validate(rec)
        except (KeyError, TypeError, IndexError, AttributeError):
            return None     # a record from elsewhere or damaged: ask go list again

    def _validate(self, rec: dict[str, Any]) -> dict[str, Any] | None:
        changed = False
        for p, old in rec["files"].items():
            cur = _stat(p)
            if old is None or cur is None:
                if old != cur:
                    return None
                continue
            if cur == old[:4]:
                continue
            if file_sha256(Path(p)) != old[4]:
                return None
            old[:4] = self._trusted(cur)
            changed = True
        for d, names in rec["dirs"].items():
            if _names(d, subdirs=False) != names:
                return None
        for d, names in rec["trees"].items():
            if _names(d, subdirs=True) != names:
                return None
        if changed:
            self._write(rec)
        return rec

    def save(self, list_key: str, listing: Listing, old: dict[str, Any] | None) -> dict[str, Any]:
        """Hash the listing's files (reusing the old digests of unchanged stats) and store the answer."""
        prev = (old or {}).get("files", {})
        files: dict[str, list[Any] | None] = {}
        for p in listing.watched:
            cur = _stat(p)
            if cur is None:
                files[p] = None
                continue
            was = prev.get(p)
            sha = was[4] if was and was[:4] == cur else file_sha256(Path(p))
            files[p] = [*self._trusted(cur), sha]
        dirs = {d: _names(d, subdirs=False) for d in listing.dirs}
        trees = {d: _names(d, subdirs=True) for d in (*listing.trees, *(w for r in listing.walk for w in _walk_dirs(r)))}
        rec = {"v": RECORD_VERSION, "list_key": list_key, "files": files, "dirs": dirs, "trees": trees,
               "compiled": list(listing.compiled), "cgo": listing.cgo}
        self._write(rec)
        return rec

    @staticmethod
    def _trusted(st: list[int]) -> list[int]:
        return st if st[1] < time.time_ns() - RACY_NS else [st[0], -1, -1, -1]

    def _write(self, rec: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(rec))
        os.replace(tmp, self.path)


@dataclass
class ProjectState:
    """What the builds of one run share, each worked out at most once and only when a key needs it:
    the digest of the whole project tree (the fallback) and the VCS state of a repository."""

    root: Path
    exclude: set[Path]
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tree: str | None = None
    _vcs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, project: Path, jobs: tuple[BuildJob, ...]) -> ProjectState:
        """The state of a plan's project; its tree digest taken now if a build keys on it and runs
        `before` steps, so files those steps write into the project never count for this run."""
        state = cls(project, output_excludes(jobs))
        if any(j.before or j.shell for j in jobs if not j.prebuilt):
            state.tree()
        return state

    def tree(self) -> str:
        with self._lock:
            if self._tree is None:
                self._tree = tree_digest(self.root, self.exclude)
            return self._tree

    def vcs(self, cwd: Path, env: Mapping[str, str]) -> Any:
        """The VCS facts go build stamps into a binary built in cwd (None: it stamps none)."""
        root, kind = _vcs_root(cwd)
        if root is None:
            return None
        git = shutil.which("git", path=env.get("PATH"))
        k = f"{root}\0{kind}\0{git}"
        with self._lock:
            if k not in self._vcs:
                self._vcs[k] = self._vcs_state(root, kind, git, env)
            return self._vcs[k]

    def _vcs_state(self, root: Path, kind: str, git: str | None, env: Mapping[str, str]) -> Any:
        if kind != ".git":
            return {"vcs": kind, "tree": tree_digest(self.root, self.exclude)}    # not modelled: all files count
        if git is None:
            return None     # -buildvcs=auto leaves the stamp out when git is missing
        # the revision and `git status --porcelain` being empty or not (vcs.modified), as go reads them,
        # and the tags (the main module's version comes from them)
        st = proc.run([git, "status", "--porcelain=v2", "--branch"], env=env, cwd=str(root), timeout=300,
                      tail_bytes=1 << 24)
        tags = proc.run([git, "for-each-ref", "refs/tags", "--format=%(refname) %(objectname) %(*objectname)"],
                        env=env, cwd=str(root), timeout=300, tail_bytes=1 << 24)
        if st.returncode != 0 or tags.returncode != 0:
            return {"vcs": "git", "error": st.stderr + tags.stderr, "tree": tree_digest(self.root, self.exclude)}
        lines = st.stdout.splitlines()
        head = next((ln.split()[2] for ln in lines if ln.startswith("# branch.oid ")), "")
        modified = any(not ln.startswith("#") for ln in lines)
        return {"vcs": "git", "revision": head, "modified": modified,
                "tags": hashlib.sha256(tags.stdout.encode()).hexdigest()}


def _vcs_root(cwd: Path) -> tuple[Path | None, str]:
    for d in (cwd, *cwd.parents):
        for kind in VCS_DIRS:
            if (d / kind).exists():
                return d, kind
    return None, ""


def source_key(job: BuildJob, env: Mapping[str, str], record: Path, state: ProjectState) -> dict[str, Any]:
    """The part of a build's key that stands for its sources (see the module docstring)."""
    gb = None if job.shell or job.before else parse_go_build(job.argv, env)
    if gb is None:
        return {"tree": state.tree()}
    genv = go_env(env)
    argv = [str(Path(go_bin_dir()) / "go"), "list", "-deps", "-json=" + ",".join(LIST_FIELDS), *gb.flags,
            *gb.packages]
    list_key = hashlib.sha256(json.dumps([argv, sorted(genv.items()), str(job.cwd), toolchain_id()])
                              .encode()).hexdigest()
    store = Record(record)
    rec = store.load(list_key)
    if rec is None:
        r = proc.run(argv, env=env, cwd=str(job.cwd), timeout=600, tail_bytes=1 << 28)
        listing = _parse_listing(r.stdout, job.cwd) if r.returncode == 0 else None
        if listing is None:
            return {"tree": state.tree(), "go list": r.returncode}   # the build will say what is wrong
        rec = store.save(list_key, listing, None)
    files = rec["files"]
    key: dict[str, Any] = {"files": [[p, (files.get(p) or [None] * 5)[4]] for p in rec["compiled"]]}
    if rec["cgo"]:
        key["tree"] = state.tree()
    if gb.buildvcs != "false":
        key["vcs"] = state.vcs(job.cwd, env)
    return key


def _parse_listing(out: str, cwd: Path) -> Listing | None:
    """go list -json prints one object after another, not a JSON array."""
    dec, pkgs, i = json.JSONDecoder(), [], 0
    try:
        while (m := _NEXT_OBJECT.search(out, i)) is not None:
            obj, i = dec.raw_decode(out, m.start())
            pkgs.append(obj)
    except ValueError:
        return None
    return listing_from(pkgs, cwd)


def output_excludes(jobs: tuple[BuildJob, ...]) -> set[Path]:
    """Paths left out of the source digest: the artifacts and the top directory they live in."""
    out: set[Path] = set()
    for j in jobs:
        out.add(j.output)
        rel = Path(j.output_rel)
        if not rel.is_absolute() and len(rel.parts) > 1:
            out.add((j.cwd / rel.parts[0]).resolve())
    return out


def tree_digest(root: Path, exclude: set[Path]) -> str:
    """sha256 over every file's relative path and content under root (skipping VCS dirs and outputs)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if n not in (".git", ".hg", ".svn", "__pycache__")
                             and (d / n).resolve() not in exclude)
        for n in sorted(filenames):
            p = d / n
            if p.resolve() in exclude or p.is_symlink() or not p.is_file():
                continue
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(file_sha256(p).encode() + b"\0")
    return h.hexdigest()
