"""A private apt for one (suite, arch): its own state, lists and .debs, never the host's dpkg database.

apt-get and apt-cache run with a config of our own (no root, no dpkg lock, any arch without
``dpkg --add-architecture``); every process goes through proc.run so Ctrl-C kills it. Only failures
that look like network trouble are retried; a missing suite or package fails at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from .. import proc
from ..errors import BuildError, ImageUnavailable
from ._fs import _sha256_file, _write_atomic
from .apt_sources import AptSource, deb822_paragraphs, run_apt_tool

#: (stage, done, total) callbacks; total 0 when unknown.
Progress = Callable[[str, int, int], None]


class _AptFailure(Exception):
    def __init__(self, message: str, network: bool) -> None:
        super().__init__(message)
        self.network = network


@dataclass(frozen=True)
class _Pkg:
    spec: str
    name: str
    version: str
    arch: str
    sha256: str


def _apt_error_summary(lines: list[str]) -> str:
    errors = [ln.strip() for ln in lines if ln.startswith(("E:", "W:", "Err:"))]
    return "; ".join(errors[-3:]) if errors else "; ".join(ln.strip() for ln in lines[-3:])


def _is_network_failure(lines: list[str]) -> bool:
    text = "\n".join(lines)
    # A missing suite or package, or a file the mirror dropped, will not come back on retry.
    if any(m in text for m in ("does not have a Release file", "Unable to locate package", " 404 ")):
        return False
    markers = (
        "Temporary failure",
        "Could not",
        "Unable to connect",
        "Failed to fetch",
        "Connection",
        "timed out",
    )
    return any(m in text for m in markers)



class _AptRepo:
    """An apt state/cache dir of our own for one (suite, arch)."""

    def __init__(self, root: Path, suite: str, arch: str, sources: list[AptSource]) -> None:
        self.root = root
        self.suite = suite
        self.arch = arch
        self.sources = sources
        self.conf = root / "apt.conf"
        self.lists = root / "state" / "lists"
        self.debs = root / "debs"
        self.stamp = root / "updated.json"

    def prepare(self) -> None:
        for d in (
            self.lists / "partial",
            self.root / "cache" / "archives" / "partial",
            self.root / "sources.list.d",
            self.root / "preferences.d",
            self.root / "log",
            self.root / "keys",
            self.debs,
        ):
            d.mkdir(parents=True, exist_ok=True)
        (self.root / "state" / "status").touch()
        lines = []
        for s in self.sources:
            opts = ""
            if s.signed_by:
                signed = s.signed_by
                if "\n" in signed:
                    # An inline key block: apt wants it as a file in one-line sources.
                    digest = hashlib.sha256(signed.encode()).hexdigest()[:16]
                    key_file = self.root / "keys" / f"{digest}.asc"
                    key_file.write_text(signed.strip() + "\n", encoding="utf-8")
                    signed = str(key_file)
                opts = f"[signed-by={signed}] "
            lines.append(f"deb {opts}{s.uri} {s.suite} {' '.join(s.components)}".rstrip())
        _write_atomic(self.root / "sources.list", "\n".join(lines) + "\n")
        r = self.root
        conf = [
            "#clear APT::Architectures;",
            f'APT::Architecture "{self.arch}";',
            f'APT::Architectures {{ "{self.arch}"; }};',
            # Retries are ours (only for network failures), so offline fails fast.
            'Acquire::Retries "0";',
            "#clear Acquire::Languages;",
            'Acquire::Languages { "none"; };',
            f'Dir::State "{r}/state";',
            f'Dir::State::lists "{self.lists}";',
            f'Dir::State::status "{r}/state/status";',
            f'Dir::Cache "{r}/cache";',
            f'Dir::Cache::archives "{r}/cache/archives";',
            f'Dir::Cache::pkgcache "{r}/cache/pkgcache.bin";',
            f'Dir::Cache::srcpkgcache "{r}/cache/srcpkgcache.bin";',
            f'Dir::Etc::SourceList "{r}/sources.list";',
            f'Dir::Etc::SourceParts "{r}/sources.list.d";',
            f'Dir::Etc::Preferences "{r}/preferences";',
            f'Dir::Etc::PreferencesParts "{r}/preferences.d";',
            f'Dir::Log "{r}/log";',
        ]
        if os.geteuid() == 0:
            # The cache usually sits in root's 0700 home, where the _apt
            # sandbox user cannot write; apt would warn and fall back anyway.
            conf.append('APT::Sandbox::User "root";')
        _write_atomic(self.conf, "\n".join(conf) + "\n")

    def _sources_digest(self) -> str:
        return hashlib.sha256((self.root / "sources.list").read_bytes()).hexdigest()

    def has_lists(self) -> bool:
        return any(self.lists.glob("*_Packages*"))

    def update(self, max_age: float, attempts: int, progress: Progress | None) -> bool:
        """Refresh the package lists unless fresh; return False if it was skipped."""
        try:
            stamp = json.loads(self.stamp.read_text(encoding="utf-8"))
            fresh = (
                stamp.get("sources") == self._sources_digest()
                and time.time() - float(stamp.get("time", 0)) < max_age
                and any(self.lists.glob("*Release"))
            )
        except (OSError, ValueError):
            fresh = False
        if fresh:
            return False
        self.stamp.unlink(missing_ok=True)
        _run_apt_retrying(
            ["apt-get", "-c", str(self.conf), "-q", "update"],
            attempts,
            progress,
            f"apt-get update {self.suite}/{self.arch}",
        )
        _write_atomic(self.stamp, json.dumps({"time": time.time(), "sources": self._sources_digest()}))
        return True

    def carries_arch(self) -> tuple[bool, str, str]:
        """(suite has Packages for the arch, why not, major version of the suite)."""
        rc, out, lines = _run_apt(
            [
                "apt-get",
                "-c",
                str(self.conf),
                "indextargets",
                "--format",
                "$(RELEASE)\t$(ARCHITECTURE)\t$(VERSION)\t$(FILENAME)",
                "Identifier: Packages",
            ]
        )
        if rc != 0:
            return False, f"apt-get indextargets failed: {_apt_error_summary(lines)}", ""
        for line in out.splitlines():
            parts = line.split("\t")
            if (
                len(parts) == 4
                and parts[0] == self.suite
                and parts[1] == self.arch
                and Path(parts[3]).exists()
            ):
                return True, "", parts[2].split(".", 1)[0]
        listed = ""
        for release in list(self.lists.glob(f"*_dists_{self.suite}_InRelease")) + list(
            self.lists.glob(f"*_dists_{self.suite}_Release")
        ):
            text = release.read_text(encoding="utf-8", errors="replace")
            m = re.search(r"^Architectures:(.*)$", text, re.M)
            if m:
                listed = f" (its Release lists: {m.group(1).strip()})"
                break
        return False, f"Debian {self.suite} does not carry {self.arch}{listed}", ""

    def resolve(self, specs: tuple[str, ...]) -> tuple[list[_Pkg], list[str]]:
        """Candidate version of each spec; also the specs nothing was found for."""
        names = sorted({alt for spec in specs for alt in spec.split(" | ")})
        rc, shown, lines = _run_apt(
            ["apt-cache", "-c", str(self.conf), "show", "--no-all-versions"]
            + [f"{n}:{self.arch}" for n in names]
        )
        found: dict[str, Mapping[str, str]] = {}
        for para in deb822_paragraphs(shown):
            pkg = para.get("Package", "")
            if pkg in names and para.get("Architecture") in (self.arch, "all"):
                found.setdefault(pkg, para)
        if rc != 0 and not found:
            raise _AptFailure(f"apt-cache show failed: {_apt_error_summary(lines)}", False)
        out: list[_Pkg] = []
        missing: list[str] = []
        for spec in specs:
            for alt in spec.split(" | "):
                hit = found.get(alt)
                if hit is not None:
                    out.append(
                        _Pkg(
                            spec=spec,
                            name=alt,
                            version=hit.get("Version", ""),
                            arch=hit.get("Architecture", self.arch),
                            sha256=hit.get("SHA256", ""),
                        )
                    )
                    break
            else:
                missing.append(spec)
        return out, missing

    def _cached_deb(self, pkg: _Pkg) -> Path | None:
        for candidate in self.debs.glob(f"{pkg.name}_*_{pkg.arch}.deb"):
            if _sha256_file(candidate) == pkg.sha256:
                return candidate
        return None

    def download(self, pkgs: list[_Pkg], attempts: int, progress: Progress | None) -> list[Path]:
        """Fetch the .debs (signature and hash checked by apt and again here)."""
        missing = [p for p in pkgs if self._cached_deb(p) is None]
        if missing:
            _run_apt_retrying(
                ["apt-get", "-c", str(self.conf), "-q", "download"]
                + [f"{p.name}:{self.arch}={p.version}" for p in missing],
                attempts,
                progress,
                f"download {len(missing)} packages",
                cwd=self.debs,
                total=len(missing),
            )
        out: list[Path] = []
        for p in pkgs:
            deb = self._cached_deb(p)
            if deb is None:
                raise BuildError(f"downloaded {p.name} {p.version} but no .deb matches its SHA256 {p.sha256}")
            out.append(deb)
        return out


def _run_apt(argv: list[str], cwd: Path | None = None) -> tuple[int, str, list[str]]:
    """(exit status, stdout, the lines of stdout and stderr) of an apt tool."""
    r = run_apt_tool(argv, cwd=cwd)
    if r is None:
        raise ImageUnavailable(f"{argv[0]} not found: building images needs Debian's apt")
    if proc.stopping():
        raise proc.Stopped("xrun is stopping")
    rc = r.returncode if r.returncode is not None else -(r.signal or 1)
    return rc, r.stdout, r.stdout.splitlines() + r.stderr.splitlines()


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, _AptFailure) and exc.network


def _run_apt_retrying(
    argv: list[str],
    attempts: int,
    progress: Progress | None,
    stage: str,
    cwd: Path | None = None,
    total: int = 0,
) -> list[str]:
    """Run apt, retrying (1 s, 2 s, 4 s... apart) only failures that look like network trouble."""

    def once() -> list[str]:
        if progress is not None:
            progress(stage, 0, total)
        rc, _out, lines = _run_apt(argv, cwd)
        # apt-get update exits 0 when fetches fail ("W: Failed to fetch"), so read the lines.
        if rc != 0 or any(ln.startswith(("E:", "Err:", "W: Failed to fetch")) for ln in lines):
            raise _AptFailure(f"{stage} failed: {_apt_error_summary(lines)}", _is_network_failure(lines))
        if progress is not None:
            got = sum(ln.startswith("Get:") for ln in lines)
            progress(stage, total or got, total or got)
        return lines

    retrying = Retrying(
        retry=retry_if_exception(_is_retryable),
        stop=stop_after_attempt(max(1, attempts)),
        wait=wait_exponential(multiplier=1, exp_base=2),
        reraise=True,
    )
    return retrying(once)


def _extract(deb: Path, dest: Path) -> None:
    """Unpack a .deb's data (``dpkg-deb -x``: no maintainer scripts run)."""
    dest.mkdir(parents=True)
    r = run_apt_tool(["dpkg-deb", "-x", str(deb), str(dest)])
    if r is None:
        raise ImageUnavailable("dpkg-deb not found: building images needs Debian's dpkg")
    if proc.stopping():
        raise proc.Stopped("xrun is stopping")
    if r.returncode != 0:
        raise BuildError(f"dpkg-deb -x {deb.name} failed: {r.stderr.strip()}")
