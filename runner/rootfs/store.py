"""The image cache: images built on demand, content-addressed, verified on every use.

Building takes minutes and a mirror; using takes a stat per file. So an entry is immutable once renamed
into place, its key names every input (definitions, package versions and hashes, the engine), and
concurrent builds of the same image (several xrun or pytest workers) wait for one another.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .. import paths, platforms
from ..errors import ImageUnavailable, UnknownImage
from ._fs import _rmtree, _sha256_file, _write_atomic
from .apt import Progress, _AptFailure, _AptRepo, _Pkg
from .apt_sources import DEBIAN_CODENAMES, host_apt_sources, host_suite, sources_for_suite
from .assemble import _MANIFEST_FORMAT, Verify, _assemble, _scan, _verify_entry, verify_report
from .definitions import ImageDef, _default_definitions_dir, load_definitions

#: The Debian architectures images are built for (the table lives with the other platform facts).
DEBIAN_ARCHES: tuple[str, ...] = tuple(platforms.DEBIAN_ARCHES)

# Bump when the build output for the same inputs changes.
ENGINE_VERSION = 2                  # 2: ownership recorded in owners.json, not applied (rootfs/owners.py)
# Newer suites tried when the host's does not carry an arch.
_FALLBACK_SUITES = 2
_UPDATE_MAX_AGE = 1800.0


@dataclass(frozen=True)
class CachedImage:
    """A built image in the cache."""

    name: str
    arch: str
    size: int
    fidelity: str
    exact: bool
    manifest: Path
    rootfs: Path
    suite: str | None
    key: str



@dataclass(frozen=True)
class _Inputs:
    """What one build is made of, and the entry they give (``ready`` when it is already built)."""

    suite: str | None
    suite_version: str
    pkgs: list[_Pkg]
    debs: list[Path]
    key: str
    entry: Path
    ready: bool = False


def _default_cache_dir() -> Path:
    return paths.cache_dir() / "images"


class ImageStore:
    """Builds images on demand into a content-addressed, verified cache.

    Layout of ``cache_dir``: ``rootfs/<name>-<arch>-<key12>/{rootfs/,manifest.json}``
    (immutable once renamed into place), ``index/<name>-<arch>.json`` (the
    current key), ``locks/``, ``apt/<suite>-<arch>/`` (private apt state and
    downloaded .debs) and ``builds.log`` (one JSON line per build).
    """

    #: apt attempts on network failures.
    apt_attempts = 3
    #: Package lists younger than this (seconds) are not refreshed.
    update_max_age = _UPDATE_MAX_AGE

    def __init__(self, cache_dir: Path | None = None, *, definitions_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir if cache_dir is not None else _default_cache_dir()
        self.definitions_dir = definitions_dir if definitions_dir is not None else _default_definitions_dir()

    # -- paths ------------------------------------------------------------

    def _index_path(self, name: str, arch: str) -> Path:
        return self.cache_dir / "index" / f"{name}-{arch}.json"

    def _lock(self, what: str) -> FileLock:
        locks = self.cache_dir / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{what}.lock"))

    def _check_args(self, name: str, arch: str) -> None:
        if arch not in platforms.DEBIAN_ARCHES:
            raise UnknownImage(f"unknown Debian arch {arch!r} (known: {', '.join(DEBIAN_ARCHES)})")
        if "/" in name or not (self.definitions_dir / f"{name}.yaml").is_file():
            known = sorted(p.stem for p in self.definitions_dir.glob("*.yaml"))
            raise UnknownImage(f"unknown image {name!r} (known: {', '.join(known)})")

    def _current(self, name: str, arch: str, level: Verify) -> Path | None:
        """The indexed entry if its definitions are unchanged and it verifies."""
        try:
            index = json.loads(self._index_path(name, arch).read_text(encoding="utf-8"))
            if index.get("engine") != ENGINE_VERSION:
                return None
            for fname, digest in index["definitions"].items():
                if _sha256_file(self.definitions_dir / fname) != digest:
                    return None
            entry = self.cache_dir / "rootfs" / str(index["entry"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if _verify_entry(entry, level) is None:
            return None
        return entry

    # -- public API -------------------------------------------------------

    def path(self, name: str, debian_arch: str, *, verify: Verify = "quick") -> Path | None:
        """The cached, verified rootfs of ``name`` for ``debian_arch``, or None."""
        self._check_args(name, debian_arch)
        entry = self._current(name, debian_arch, verify)
        return entry / "rootfs" if entry is not None else None

    def ensure(
        self,
        name: str,
        debian_arch: str,
        progress: Progress | None = None,
        *,
        verify: Verify = "quick",
        refresh: bool = False,
    ) -> Path:
        """A ready rootfs directory, building it (once, across processes) if needed.

        ``refresh`` re-reads the package lists and rebuilds if versions moved.
        """
        self._check_args(name, debian_arch)
        if not refresh:
            entry = self._current(name, debian_arch, verify)
            if entry is not None:
                return entry / "rootfs"
        lock = self._lock(f"{name}-{debian_arch}")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if progress is not None:
                progress(f"waiting for another build of {name}/{debian_arch}", 0, 0)
            lock.acquire()
        try:
            if not refresh:
                # Another process may have built it while we waited.
                entry = self._current(name, debian_arch, verify)
                if entry is not None:
                    return entry / "rootfs"
            return self._build(name, debian_arch, progress, refresh, verify) / "rootfs"
        finally:
            lock.release()

    def prune(self, *, all_entries: bool = False) -> int:
        """Remove unreferenced entries, leftovers and downloaded .debs; return bytes freed.

        With ``all_entries`` every image, index and apt state is removed too.
        Entries being built by another process are skipped.
        """
        freed = 0
        rootfs_dir = self.cache_dir / "rootfs"
        index_dir = self.cache_dir / "index"
        referenced: set[str] = set()
        if index_dir.is_dir():
            for idx in index_dir.glob("*.json"):
                name_arch = idx.stem
                if all_entries:
                    with self._try_lock(name_arch) as held:
                        if held:
                            freed += _rmtree(idx)
                            continue
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    referenced.add(str(json.loads(idx.read_text(encoding="utf-8"))["entry"]))
        if rootfs_dir.is_dir():
            for entry in sorted(rootfs_dir.iterdir()):
                if entry.name in referenced:
                    continue
                name_arch = entry.name.removeprefix(".tmp-").rsplit("-", 1)[0]
                with self._try_lock(name_arch) as held:
                    if held:
                        freed += _rmtree(entry)
        apt_dir = self.cache_dir / "apt"
        if apt_dir.is_dir():
            for repo in sorted(apt_dir.iterdir()):
                arch = repo.name.rsplit("-", 1)[-1]
                with self._try_lock(f"apt-{arch}") as held:
                    if not held:
                        continue
                    if all_entries:
                        freed += _rmtree(repo)
                    else:
                        for deb in (repo / "debs").glob("*.deb"):
                            freed += _rmtree(deb)
        return freed

    def verify(self, name: str | None = None) -> builtins.list[tuple[CachedImage, builtins.list[str]]]:
        """Check every cached image (or those of `name`) file by file against its manifest.

        A modified entry is removed (under its build lock), so the next use rebuilds it: a changed
        image is never served, even one whose change the quick check on use could not see.
        """
        out = []
        for img in self.list():
            if name is not None and img.name != name:
                continue
            entry = img.manifest.parent
            problems = verify_report(entry)
            if problems:
                with self._lock(f"{img.name}-{img.arch}"):
                    _rmtree(self._index_path(img.name, img.arch))
                    _rmtree(entry)
            out.append((img, problems))
        return out

    def list(self) -> builtins.list[CachedImage]:
        """The current (indexed) images in the cache, sorted by name and arch."""
        out: builtins.list[CachedImage] = []
        index_dir = self.cache_dir / "index"
        if not index_dir.is_dir():
            return out
        for idx in sorted(index_dir.glob("*.json")):
            try:
                index = json.loads(idx.read_text(encoding="utf-8"))
                entry = self.cache_dir / "rootfs" / str(index["entry"])
                manifest_path = entry / "manifest.json"
                m = json.loads(manifest_path.read_text(encoding="utf-8"))
                out.append(
                    CachedImage(
                        name=str(m["name"]),
                        arch=str(m["arch"]),
                        size=int(m["total_size"]),
                        fidelity=str(m["fidelity"]),
                        exact=bool(m.get("exact", False)),
                        manifest=manifest_path,
                        rootfs=entry / "rootfs",
                        suite=m.get("suite"),
                        key=str(m["key"]),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(out, key=lambda c: (c.name, c.arch))

    # -- internals --------------------------------------------------------

    @contextlib.contextmanager
    def _try_lock(self, what: str) -> Iterator[bool]:
        """The lock held while in the block if nobody else holds it; yields whether it is held."""
        lock = self._lock(what)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def _select_repo(
        self, name: str, arch: str, refresh: bool, progress: Progress | None
    ) -> tuple[_AptRepo, str]:
        """The first suite (host's, then newer) whose archive carries arch."""
        sources = host_apt_sources()
        host = host_suite(sources)
        if host is None:
            raise ImageUnavailable(f"{name} for {arch}: the host's apt configuration has no deb sources")
        candidates = [host]
        if host in DEBIAN_CODENAMES:
            at = DEBIAN_CODENAMES.index(host)
            candidates += list(DEBIAN_CODENAMES[at + 1 : at + 1 + _FALLBACK_SUITES])
        reasons: list[str] = []
        for suite in candidates:
            repo = _AptRepo(
                self.cache_dir / "apt" / f"{suite}-{arch}",
                suite,
                arch,
                sources_for_suite(sources, host, suite),
            )
            repo.prepare()
            try:
                repo.update(0.0 if refresh else self.update_max_age, self.apt_attempts, progress)
            except _AptFailure as exc:
                if not repo.has_lists():
                    if exc.network and suite == host:
                        raise ImageUnavailable(
                            f"{name} for {arch} is not in the cache ({self.cache_dir}) and "
                            f"no Debian mirror could be reached ({exc}). Run "
                            f"`xrun images build {name} --arch {arch}` on a machine that "
                            f"reaches a Debian mirror and copy its cache here."
                        ) from exc
                    reasons.append(f"{suite}: {exc}")
                    continue
                if progress is not None:
                    progress(f"using stale package lists for {suite}/{arch}", 0, 0)
            ok, why, version = repo.carries_arch()
            if ok:
                return repo, version
            reasons.append(why)
        raise ImageUnavailable(
            f"{name} for {arch}: no Debian suite tried carries {arch}: {'; '.join(reasons)}"
        )

    def _build(
        self,
        name: str,
        arch: str,
        progress: Progress | None,
        refresh: bool,
        verify: Verify,
    ) -> Path:
        started = time.monotonic()
        defn = load_definitions(self.definitions_dir).get(name)
        if defn is None:
            raise UnknownImage(f"unknown image {name!r}")
        def_hashes = {p.name: _sha256_file(p) for p in defn.sources}
        rootfs_dir = self.cache_dir / "rootfs"
        rootfs_dir.mkdir(parents=True, exist_ok=True)
        tmp = rootfs_dir / f".tmp-{name}-{arch}-{os.getpid()}x{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            # Held until the .debs are unpacked so prune cannot remove them midway.
            with self._lock(f"apt-{arch}"):
                got = self._fetch(defn, arch, def_hashes, progress, refresh, verify)
                if got.ready:
                    # Same inputs as an entry already built: only the index was stale.
                    self._write_index(name, arch, got.entry, got.key, def_hashes)
                    return got.entry
                _assemble(defn, got.debs, tmp / "rootfs", _placeholder_values(arch, got), progress)
            if progress is not None:
                progress("manifest", 0, 1)
            files, total = _scan(tmp / "rootfs")
            manifest = _manifest(defn, arch, def_hashes, got, files, total)
            # Written last: an entry without a manifest is never used.
            _write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
            if os.path.lexists(got.entry):
                _rmtree(got.entry)
            os.rename(tmp, got.entry)
        finally:
            if tmp.exists():
                _rmtree(tmp)
        self._write_index(name, arch, got.entry, got.key, def_hashes)
        self._log_build(name, arch, got, time.monotonic() - started, manifest["built_at"])
        if progress is not None:
            progress("done", 1, 1)
        return got.entry

    def _fetch(
        self,
        defn: ImageDef,
        arch: str,
        def_hashes: dict[str, str],
        progress: Progress | None,
        refresh: bool,
        verify: Verify,
    ) -> _Inputs:
        """Choose the suite and package versions, and download the .debs unless that entry exists."""
        name = defn.name
        suite: str | None = None
        suite_version = ""
        repo: _AptRepo | None = None
        pkgs: builtins.list[_Pkg] = []
        # A second round only when the mirror dropped a version our lists still name.
        for second_round in (False, True):
            if defn.packages:
                if repo is None:
                    repo, suite_version = self._select_repo(name, arch, refresh, progress)
                else:
                    self._update_after_404(repo, name, arch, progress)
                suite = repo.suite
                pkgs = self._resolve(repo, defn, name, arch)
            key = _cache_key(name, arch, suite, def_hashes, pkgs)
            entry = self.cache_dir / "rootfs" / f"{name}-{arch}-{key[:12]}"
            if _verify_entry(entry, verify) is not None:
                return _Inputs(suite, suite_version, pkgs, [], key, entry, ready=True)
            if repo is None or not pkgs:
                return _Inputs(suite, suite_version, pkgs, [], key, entry)
            try:
                debs = repo.download(pkgs, self.apt_attempts, progress)
            except _AptFailure as exc:
                if not second_round and " 404 " in f" {exc} ":
                    continue
                raise ImageUnavailable(
                    f"{name} for {arch}: could not download packages from Debian "
                    f"{suite} ({exc}). Run `xrun images build {name} --arch {arch}` "
                    f"on a machine that reaches a Debian mirror."
                ) from exc
            return _Inputs(suite, suite_version, pkgs, debs, key, entry)
        raise AssertionError("unreachable: the second round returns or raises")

    def _resolve(self, repo: _AptRepo, defn: ImageDef, name: str, arch: str) -> builtins.list[_Pkg]:
        try:
            pkgs, missing = repo.resolve(defn.packages)
        except _AptFailure as exc:
            raise ImageUnavailable(f"{name} for {arch}: {exc}") from exc
        if missing:
            raise ImageUnavailable(
                f"{name} for {arch}: Debian {repo.suite} has no "
                f"{', '.join(repr(m) for m in missing)} for {arch}"
            )
        return pkgs

    def _update_after_404(self, repo: _AptRepo, name: str, arch: str, progress: Progress | None) -> None:
        try:
            repo.update(0.0, self.apt_attempts, progress)
        except _AptFailure as exc:
            raise ImageUnavailable(
                f"{name} for {arch}: the package lists are out of date and could not be refreshed ({exc})"
            ) from exc

    def _write_index(self, name: str, arch: str, entry: Path, key: str, def_hashes: dict[str, str]) -> None:
        path = self._index_path(name, arch)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"entry": entry.name, "key": key, "engine": ENGINE_VERSION, "definitions": def_hashes}
        _write_atomic(path, json.dumps(data) + "\n")


    def _log_build(self, name: str, arch: str, got: _Inputs, seconds: float, built_at: str) -> None:
        """One JSON line per build in builds.log."""
        with open(self.cache_dir / "builds.log", "a", encoding="utf-8") as log:
            record = {
                "name": name,
                "arch": arch,
                "key": got.key,
                "suite": got.suite,
                "seconds": round(seconds, 3),
                "pid": os.getpid(),
                "time": built_at,
            }
            log.write(json.dumps(record) + "\n")


def _placeholder_values(arch: str, got: _Inputs) -> dict[str, str]:
    info = platforms.DEBIAN_ARCHES[arch]
    return {
        "arch": arch,
        "musl_arch": info.musl_arch,
        "glibc_loader": info.glibc_loader,
        "suite": got.suite or "",
        "suite_version": got.suite_version,
    }


def _manifest(
    defn: ImageDef, arch: str, def_hashes: dict[str, str], got: _Inputs, files: dict[str, Any], total: int
) -> dict[str, Any]:
    return {
        "format": _MANIFEST_FORMAT,
        "name": defn.name,
        "arch": arch,
        "suite": got.suite,
        "key": got.key,
        "engine": ENGINE_VERSION,
        "definitions": def_hashes,
        "description": defn.description,
        "fidelity": defn.fidelity,
        "reference": {"image": defn.reference.image, "digest": defn.reference.digest},
        "exact": False,
        "packages": [
            {"name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256} for p in got.pkgs
        ],
        "total_size": total,
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }


def _cache_key(name: str, arch: str, suite: str | None, def_hashes: dict[str, str], pkgs: list[_Pkg]) -> str:
    payload = {
        "engine": ENGINE_VERSION,
        "name": name,
        "arch": arch,
        "suite": suite,
        "definitions": dict(sorted(def_hashes.items())),
        "packages": [[p.name, p.version, p.arch, p.sha256] for p in pkgs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
