"""Minimal root filesystems ("images") rebuilt from Debian packages.

An image is described by ``images/<name>.yaml`` and built per Debian
architecture into a content-addressed cache, so qemu-user can run a
cross-built binary inside it without a container registry.

Definition schema (unknown keys are errors; paths are absolute guest paths):

``name`` (str, required)
    Must equal the file name without ``.yaml``.
``description`` (str, required)
    What the image stands for.
``fidelity`` (str, required)
    "rebuilt equivalent: ..." -- how it differs from the real image.
``reference`` (mapping, required)
    ``image``: the real image it mimics (``alpine:3.20``); ``digest``:
    ``sha256:<64 hex>`` or null when unknown.
``extends`` (str)
    Another definition whose content is taken first: packages, generate,
    expect and exclude are appended to; files, dirs and symlinks override.
``packages`` (list of str)
    Debian package names, unpacked in order with ``dpkg-deb -x`` (no
    maintainer scripts, no dependency resolution). ``"a | b"`` takes the
    first alternative the suite has.
``files`` (mapping path -> str | {content, mode, owner})
    Files written after unpacking; mode defaults to ``"0644"``.
``dirs`` (mapping path -> mode | {mode, owner})
    Directories created with that mode (a quoted octal string, ``"1777"``).
``symlinks`` (mapping path -> target)
    Symlinks created last (replacing what a package put there).
``generate`` (list)
    Generated content; ``ca-bundle`` concatenates the ``.crt`` files under
    /usr/share/ca-certificates into /etc/ssl/certs/ca-certificates.crt.
``exclude`` (list of glob)
    Unpacked paths left out (fnmatch, ``*`` crosses ``/``).
``expect`` (list of path)
    Paths that must resolve (inside the image) after the build.

``owner`` is ``"uid:gid"`` and is applied only when building as root.
Paths, symlink targets, exclude/expect patterns and file contents may use
``{arch}``, ``{musl_arch}``, ``{glibc_loader}``, ``{suite}`` and
``{suite_version}``; other braces are left alone.

Every image uses a merged-/usr layout: /bin, /sbin and /lib* are symlinks
into /usr, and package content under them is moved there. This makes the
same definition work with suites that ship either layout.
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import hashlib
import json
import os
import posixpath
import re
import secrets
import shlex
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from . import paths, platforms
from .errors import XarchError

__all__ = [
    "ARCH_INFO",
    "DEBIAN_ARCHES",
    "DEBIAN_CODENAMES",
    "AptSource",
    "ArchInfo",
    "BuildError",
    "CachedImage",
    "DirSpec",
    "FileSpec",
    "ImageDef",
    "ImageError",
    "ImageStore",
    "ImageUnavailable",
    "RecipeError",
    "Reference",
    "UnknownImage",
    "load_definitions",
    "parse_deb822_sources",
    "parse_one_line_sources",
]

Progress = Callable[[str, int, int], None]
Verify = Literal["quick", "full"]


# Per Debian architecture: the names definitions refer to (musl arch, glibc loader). The table lives
# with the other platform facts.
ArchInfo = platforms.DebianArch
ARCH_INFO: Mapping[str, ArchInfo] = platforms.DEBIAN_ARCHES
DEBIAN_ARCHES: tuple[str, ...] = tuple(ARCH_INFO)

# Release order; an arch the host suite lacks is looked for in newer ones.
DEBIAN_CODENAMES: tuple[str, ...] = ("buster", "bullseye", "bookworm", "trixie", "forky")
_FALLBACK_SUITES = 2

# Bump when the build output for the same inputs changes.
ENGINE_VERSION = 1
_MANIFEST_FORMAT = 1
_MERGED_DIRS = frozenset({"bin", "sbin", "lib", "lib32", "lib64", "libx32", "libo32"})
_PLACEHOLDERS = frozenset({"arch", "musl_arch", "glibc_loader", "suite", "suite_version"})
_GENERATORS = frozenset({"ca-bundle"})
_TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "fidelity",
        "reference",
        "extends",
        "packages",
        "files",
        "dirs",
        "symlinks",
        "generate",
        "exclude",
        "expect",
    }
)
_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_MODE_RE = re.compile(r"^[0-7]{3,4}$")
_OWNER_RE = re.compile(r"^\d+:\d+$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")
_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
_UPDATE_MAX_AGE = 1800.0


class ImageError(XarchError):
    """Base class of this module's errors (exit 3: something needed is missing)."""

    exit_code = 3


class RecipeError(ImageError):
    """An invalid image definition, located by file, line and key."""

    exit_code = 2

    def __init__(self, path: Path, line: int | None, key: str, message: str) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = _display_path(self.path)
        if self.line is not None:
            where += f":{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ImageUnavailable(ImageError):
    """The image cannot be had for that arch (offline, arch or package missing)."""


class UnknownImage(ImageError, LookupError):
    """No such image definition or unsupported arch name."""

    exit_code = 2


class BuildError(ImageError):
    """The build itself failed (unpacking, a missing expected path...)."""


@dataclass(frozen=True)
class Reference:
    """The real image a definition stands for."""

    image: str
    digest: str | None


@dataclass(frozen=True)
class FileSpec:
    """A file written into the image."""

    content: str
    mode: int = 0o644
    owner: tuple[int, int] | None = None


@dataclass(frozen=True)
class DirSpec:
    """A directory created in the image."""

    mode: int = 0o755
    owner: tuple[int, int] | None = None


@dataclass(frozen=True, eq=False)
class ImageDef:
    """A parsed definition, with its ``extends`` chain already merged in."""

    name: str
    description: str
    fidelity: str
    reference: Reference
    packages: tuple[str, ...] = ()
    files: Mapping[str, FileSpec] = field(default_factory=dict)
    dirs: Mapping[str, DirSpec] = field(default_factory=dict)
    symlinks: Mapping[str, str] = field(default_factory=dict)
    generate: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    expect: tuple[str, ...] = ()
    extends: str | None = None
    # Definition files it was made from, the extends root first.
    sources: tuple[Path, ...] = ()


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
class AptSource:
    """One (URI, suite) of the host's apt configuration."""

    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None


# --------------------------------------------------------------------------
# Definitions


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def _default_definitions_dir() -> Path:
    return paths.images_dir()


@dataclass
class _Raw:
    """One file's validated values before extends is merged."""

    path: Path
    name: str
    description: str
    fidelity: str
    reference: Reference
    extends: str | None
    extends_line: int | None
    packages: list[str]
    files: dict[str, FileSpec]
    dirs: dict[str, DirSpec]
    symlinks: dict[str, str]
    generate: list[str]
    exclude: list[str]
    expect: list[str]


class _Checker:
    """Validation helpers that know the file and the YAML line numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, line: int | None, key: str, message: str) -> RecipeError:
        return RecipeError(self.path, line, key, message)

    @staticmethod
    def key_line(node: Any, key: Any) -> int | None:
        try:
            return int(node.lc.key(key)[0]) + 1
        except (AttributeError, KeyError, TypeError):
            return None

    @staticmethod
    def item_line(node: Any, index: int) -> int | None:
        try:
            return int(node.lc.item(index)[0]) + 1
        except (AttributeError, KeyError, TypeError, IndexError):
            return None

    def string(self, value: Any, line: int | None, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(line, key, "must be a string")
        return str(value)

    def mapping(self, value: Any, line: int | None, key: str) -> Mapping[Any, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(line, key, "must be a mapping")
        return value

    def strings(self, node: Any, line: int | None, key: str) -> list[str]:
        if not isinstance(node, list):
            raise self.fail(line, key, "must be a list of strings")
        out: list[str] = []
        for i, item in enumerate(node):
            out.append(self.string(item, self.item_line(node, i) or line, f"{key}[{i}]"))
        return out

    def guest_path(self, value: Any, line: int | None, key: str) -> str:
        text = self.string(value, line, key)
        if not text.startswith("/") or text == "/":
            raise self.fail(line, key, "must be an absolute path below /")
        if posixpath.normpath(text) != text or "/../" in text + "/":
            raise self.fail(line, key, "must be a normalized path without '..'")
        self.placeholders(text, line, key)
        return text

    def placeholders(self, text: str, line: int | None, key: str) -> None:
        for found in _PLACEHOLDER_RE.findall(text):
            if found not in _PLACEHOLDERS:
                known = ", ".join(f"{{{p}}}" for p in sorted(_PLACEHOLDERS))
                raise self.fail(line, key, f"unknown placeholder {{{found}}} (known: {known})")

    def mode(self, value: Any, line: int | None, key: str) -> int:
        if not isinstance(value, str) or not _MODE_RE.match(value):
            raise self.fail(line, key, 'must be a quoted octal mode string like "0755"')
        return int(value, 8)

    def owner(self, value: Any, line: int | None, key: str) -> tuple[int, int]:
        if not isinstance(value, str) or not _OWNER_RE.match(value):
            raise self.fail(line, key, 'must be a "uid:gid" string like "65532:65532"')
        uid, gid = value.split(":")
        return int(uid), int(gid)

    def only_keys(self, node: Mapping[Any, Any], allowed: frozenset[str], prefix: str) -> None:
        for k in node:
            if k not in allowed:
                name = f"{prefix}.{k}" if prefix else str(k)
                raise self.fail(
                    self.key_line(node, k),
                    name,
                    f"unknown key (allowed: {', '.join(sorted(allowed))})",
                )


def _parse_file(path: Path) -> _Raw:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    c = _Checker(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise c.fail(None, "", f"cannot read: {exc}") from exc
    try:
        doc = YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise c.fail(line, "", f"invalid YAML: {exc.problem or exc}") from exc
    if not isinstance(doc, Mapping):
        raise c.fail(1, "", "must be a mapping of keys (name, description, ...)")
    c.only_keys(doc, _TOP_KEYS, "")

    def kline(key: str) -> int | None:
        return c.key_line(doc, key)

    for required in ("name", "description", "fidelity", "reference"):
        if required not in doc:
            raise c.fail(1, required, "is required")
    name = c.string(doc["name"], kline("name"), "name")
    if name != path.stem:
        raise c.fail(kline("name"), "name", f"must match the file name ({path.stem!r})")
    description = c.string(doc["description"], kline("description"), "description")
    fidelity = c.string(doc["fidelity"], kline("fidelity"), "fidelity")

    ref = c.mapping(doc["reference"], kline("reference"), "reference")
    c.only_keys(ref, frozenset({"image", "digest"}), "reference")
    if "image" not in ref:
        raise c.fail(kline("reference"), "reference.image", "is required")
    image = c.string(ref["image"], c.key_line(ref, "image"), "reference.image")
    digest_value = ref.get("digest")
    digest: str | None = None
    if digest_value is not None:
        digest = c.string(digest_value, c.key_line(ref, "digest"), "reference.digest")
        if not _DIGEST_RE.match(digest):
            raise c.fail(c.key_line(ref, "digest"), "reference.digest", "must be sha256:<64 hex> or null")

    extends = None
    if doc.get("extends") is not None:
        extends = c.string(doc["extends"], kline("extends"), "extends")

    packages: list[str] = []
    if doc.get("packages") is not None:
        node = doc["packages"]
        for i, spec in enumerate(c.strings(node, kline("packages"), "packages")):
            key = f"packages[{i}]"
            alts = [a.strip() for a in spec.split("|")]
            for alt in alts:
                if not _PKG_RE.match(alt):
                    raise c.fail(c.item_line(node, i), key, f"{alt!r} is not a Debian package name")
            packages.append(" | ".join(alts))

    files: dict[str, FileSpec] = {}
    if doc.get("files") is not None:
        node = c.mapping(doc["files"], kline("files"), "files")
        for k, v in node.items():
            kl = c.key_line(node, k)
            p = c.guest_path(k, kl, f"files[{k}]")
            if isinstance(v, str):
                files[p] = FileSpec(content=str(v))
                continue
            fmap = c.mapping(v, kl, f"files[{p}]")
            c.only_keys(fmap, frozenset({"content", "mode", "owner"}), f"files[{p}]")
            if "content" not in fmap:
                raise c.fail(kl, f"files[{p}].content", "is required")
            content = c.string(fmap["content"], c.key_line(fmap, "content"), f"files[{p}].content")
            mode = 0o644
            if "mode" in fmap:
                mode = c.mode(fmap["mode"], c.key_line(fmap, "mode"), f"files[{p}].mode")
            owner = None
            if "owner" in fmap:
                owner = c.owner(fmap["owner"], c.key_line(fmap, "owner"), f"files[{p}].owner")
            files[p] = FileSpec(content=content, mode=mode, owner=owner)

    dirs: dict[str, DirSpec] = {}
    if doc.get("dirs") is not None:
        node = c.mapping(doc["dirs"], kline("dirs"), "dirs")
        for k, v in node.items():
            kl = c.key_line(node, k)
            p = c.guest_path(k, kl, f"dirs[{k}]")
            if not isinstance(v, Mapping):
                dirs[p] = DirSpec(mode=c.mode(v, kl, f"dirs[{p}]"))
                continue
            c.only_keys(v, frozenset({"mode", "owner"}), f"dirs[{p}]")
            mode = 0o755
            if "mode" in v:
                mode = c.mode(v["mode"], c.key_line(v, "mode"), f"dirs[{p}].mode")
            owner = None
            if "owner" in v:
                owner = c.owner(v["owner"], c.key_line(v, "owner"), f"dirs[{p}].owner")
            dirs[p] = DirSpec(mode=mode, owner=owner)

    symlinks: dict[str, str] = {}
    if doc.get("symlinks") is not None:
        node = c.mapping(doc["symlinks"], kline("symlinks"), "symlinks")
        for k, v in node.items():
            kl = c.key_line(node, k)
            p = c.guest_path(k, kl, f"symlinks[{k}]")
            target = c.string(v, kl, f"symlinks[{p}]")
            if not target:
                raise c.fail(kl, f"symlinks[{p}]", "target must not be empty")
            c.placeholders(target, kl, f"symlinks[{p}]")
            symlinks[p] = target

    generate: list[str] = []
    if doc.get("generate") is not None:
        node = doc["generate"]
        for i, g in enumerate(c.strings(node, kline("generate"), "generate")):
            if g not in _GENERATORS:
                raise c.fail(
                    c.item_line(node, i),
                    f"generate[{i}]",
                    f"unknown generator {g!r} (known: {', '.join(sorted(_GENERATORS))})",
                )
            generate.append(g)

    def path_list(key: str) -> list[str]:
        if doc.get(key) is None:
            return []
        node = doc[key]
        if not isinstance(node, list):
            raise c.fail(kline(key), key, "must be a list of strings")
        return [
            c.guest_path(v, c.item_line(node, i) or kline(key), f"{key}[{i}]") for i, v in enumerate(node)
        ]

    # A lone placeholder such as "{glibc_loader}" expands to an absolute path.
    expect_raw = doc.get("expect")
    expect: list[str] = []
    if expect_raw is not None:
        if not isinstance(expect_raw, list):
            raise c.fail(kline("expect"), "expect", "must be a list of strings")
        for i, v in enumerate(expect_raw):
            il = c.item_line(expect_raw, i) or kline("expect")
            text = c.string(v, il, f"expect[{i}]")
            if text.startswith("{"):
                c.placeholders(text, il, f"expect[{i}]")
                expect.append(text)
            else:
                expect.append(c.guest_path(text, il, f"expect[{i}]"))

    return _Raw(
        path=path,
        name=name,
        description=description,
        fidelity=fidelity,
        reference=Reference(image=image, digest=digest),
        extends=extends,
        extends_line=kline("extends"),
        packages=packages,
        files=files,
        dirs=dirs,
        symlinks=symlinks,
        generate=generate,
        exclude=path_list("exclude"),
        expect=expect,
    )


def _dedupe(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _merge(raws: dict[str, _Raw], name: str, stack: tuple[str, ...] = ()) -> ImageDef:
    raw = raws[name]
    if raw.extends is None:
        return ImageDef(
            name=raw.name,
            description=raw.description,
            fidelity=raw.fidelity,
            reference=raw.reference,
            packages=_dedupe(raw.packages),
            files=dict(raw.files),
            dirs=dict(raw.dirs),
            symlinks=dict(raw.symlinks),
            generate=_dedupe(raw.generate),
            exclude=_dedupe(raw.exclude),
            expect=_dedupe(raw.expect),
            sources=(raw.path,),
        )
    if raw.extends not in raws:
        raise RecipeError(raw.path, raw.extends_line, "extends", f"no definition named {raw.extends!r}")
    if raw.extends in stack or raw.extends == name:
        chain = " -> ".join((*stack, name, raw.extends))
        raise RecipeError(raw.path, raw.extends_line, "extends", f"cycle: {chain}")
    base = _merge(raws, raw.extends, (*stack, name))
    return ImageDef(
        name=raw.name,
        description=raw.description,
        fidelity=raw.fidelity,
        reference=raw.reference,
        packages=_dedupe([*base.packages, *raw.packages]),
        files={**base.files, **raw.files},
        dirs={**base.dirs, **raw.dirs},
        symlinks={**base.symlinks, **raw.symlinks},
        generate=_dedupe([*base.generate, *raw.generate]),
        exclude=_dedupe([*base.exclude, *raw.exclude]),
        expect=_dedupe([*base.expect, *raw.expect]),
        extends=raw.extends,
        sources=(*base.sources, raw.path),
    )


def load_definitions(dir: Path | None = None) -> dict[str, ImageDef]:
    """Parse and validate every ``<dir>/*.yaml``; raise RecipeError on the first error."""
    directory = dir if dir is not None else _default_definitions_dir()
    raws: dict[str, _Raw] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = _parse_file(path)
        raws[raw.name] = raw
    return {name: _merge(raws, name) for name in sorted(raws)}


# --------------------------------------------------------------------------
# Host apt configuration


def _split_options(text: str) -> dict[str, str]:
    opts: dict[str, str] = {}
    for part in text.split():
        k, sep, v = part.partition("=")
        if sep:
            opts[k.rstrip("+-").lower()] = v
    return opts


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse ``sources.list`` lines (``deb [opts] uri suite comp...``)."""
    out: list[AptSource] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if not m:
            continue
        opts = _split_options(m.group(1) or "")
        out.append(
            AptSource(
                uri=m.group(2),
                suite=m.group(3),
                components=tuple(m.group(4).split()),
                signed_by=opts.get("signed-by"),
            )
        )
    return out


def _deb822_paragraphs(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key: str | None = None
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, key = {}, None
            continue
        if raw[0] in " \t" and key is not None:
            cont = raw[1:]
            fields[key] += "\n" + ("" if cont.strip() == "." else cont)
            continue
        k, sep, v = raw.partition(":")
        if sep:
            key = k.strip().lower()
            fields[key] = v.strip()


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a deb822 ``*.sources`` file (Types/URIs/Suites/Components/Signed-By)."""
    out: list[AptSource] = []
    for para in _deb822_paragraphs(text):
        if "deb" not in para.get("types", "").split():
            continue
        if para.get("enabled", "yes").strip().lower() == "no":
            continue
        signed = para.get("signed-by", "").strip() or None
        for uri in para.get("uris", "").split():
            for suite in para.get("suites", "").split():
                out.append(
                    AptSource(
                        uri=uri,
                        suite=suite,
                        components=tuple(para.get("components", "").split()),
                        signed_by=signed,
                    )
                )
    return out


def _apt_config_paths() -> tuple[Path, Path]:
    """The host's sources.list file and sources.list.d directory."""
    default = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
    exe = shutil.which("apt-config")
    if exe is None:
        return default
    try:
        out = subprocess.run(
            [exe, "shell", "SL", "Dir::Etc::sourcelist/f", "SP", "Dir::Etc::sourceparts/d"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
            env=_apt_env(),
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return default
    values: dict[str, str] = {}
    for line in out.splitlines():
        k, _, v = line.partition("=")
        parts = shlex.split(v)
        if parts:
            values[k] = parts[0]
    return (
        Path(values.get("SL", str(default[0]))),
        Path(values.get("SP", str(default[1]))),
    )


def host_apt_sources() -> list[AptSource]:
    """All ``deb`` entries of the host's apt configuration, in apt's order."""
    source_list, parts = _apt_config_paths()
    out: list[AptSource] = []
    if source_list.is_file():
        out += parse_one_line_sources(source_list.read_text(encoding="utf-8", errors="replace"))
    if parts.is_dir():
        for p in sorted(parts.iterdir()):
            # apt itself only reads these two suffixes; others are disabled copies.
            if p.suffix == ".list":
                out += parse_one_line_sources(p.read_text(encoding="utf-8", errors="replace"))
            elif p.suffix == ".sources":
                out += parse_deb822_sources(p.read_text(encoding="utf-8", errors="replace"))
    return out


def _os_codename() -> str | None:
    for p in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            text = p.read_text(encoding="utf-8")
        except OSError:
            continue
        m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
        if m:
            return m.group(1)
    return None


def host_suite(sources: list[AptSource]) -> str | None:
    """The host's base suite: the os-release codename if apt uses it, else the first."""
    bases = [s.suite.split("-", 1)[0] for s in sources if not s.suite.endswith("/")]
    codename = _os_codename()
    if codename and codename in bases:
        return codename
    return bases[0] if bases else None


def sources_for_suite(sources: list[AptSource], host: str, suite: str) -> list[AptSource]:
    """The host entries of suite ``host`` (and host-updates, ...) moved to ``suite``."""
    out: list[AptSource] = []
    for s in sources:
        if s.suite == host:
            new = suite
        elif s.suite.startswith(host + "-"):
            new = suite + s.suite[len(host) :]
        else:
            # Third-party repositories name other suites; they are not Debian.
            continue
        entry = AptSource(s.uri, new, s.components, s.signed_by)
        if entry not in out:
            out.append(entry)
    return out


# --------------------------------------------------------------------------
# Private apt


def _apt_env() -> dict[str, str]:
    env = dict(os.environ)
    # apt's messages are parsed; keep them untranslated.
    env["LC_ALL"] = "C"
    env.pop("LANGUAGE", None)
    return env


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
        rc, lines = _run_apt(
            [
                "apt-get",
                "-c",
                str(self.conf),
                "indextargets",
                "--format",
                "$(RELEASE)\t$(ARCHITECTURE)\t$(VERSION)\t$(FILENAME)",
                "Identifier: Packages",
            ],
            None,
        )
        if rc != 0:
            return False, f"apt-get indextargets failed: {_apt_error_summary(lines)}", ""
        for line in lines:
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
        rc, lines = _run_apt(
            ["apt-cache", "-c", str(self.conf), "show", "--no-all-versions"]
            + [f"{n}:{self.arch}" for n in names],
            None,
        )
        found: dict[str, dict[str, str]] = {}
        for para in _deb822_paragraphs("\n".join(lines)):
            pkg = para.get("package", "")
            if pkg in names and para.get("architecture") in (self.arch, "all"):
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
                            version=hit.get("version", ""),
                            arch=hit.get("architecture", self.arch),
                            sha256=hit.get("sha256", ""),
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


def _run_apt(
    argv: list[str],
    on_line: Callable[[str], None] | None,
    cwd: Path | None = None,
) -> tuple[int, list[str]]:
    exe = shutil.which(argv[0])
    if exe is None:
        raise ImageUnavailable(f"{argv[0]} not found: building images needs Debian's apt")
    lines: list[str] = []
    with subprocess.Popen(
        [exe, *argv[1:]],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=cwd,
        env=_apt_env(),
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if on_line is not None:
                on_line(line)
        rc = proc.wait()
    return rc, lines


def _run_apt_retrying(
    argv: list[str],
    attempts: int,
    progress: Progress | None,
    stage: str,
    cwd: Path | None = None,
    total: int = 0,
) -> list[str]:
    """Run apt, retrying only failures that look like network trouble."""
    for attempt in range(1, max(1, attempts) + 1):
        got = 0

        def on_line(line: str) -> None:
            nonlocal got
            if line.startswith("Get:"):
                got += 1
                if progress is not None:
                    progress(stage, got, total)

        if progress is not None:
            progress(stage, 0, total)
        rc, lines = _run_apt(argv, on_line, cwd)
        # apt-get update exits 0 when fetches fail ("W: Failed to fetch"), so read the lines.
        failed = rc != 0 or any(ln.startswith(("E:", "Err:", "W: Failed to fetch")) for ln in lines)
        if not failed:
            if progress is not None:
                progress(stage, total or got, total or got)
            return lines
        network = _is_network_failure(lines)
        if not network or attempt >= attempts:
            raise _AptFailure(f"{stage} failed: {_apt_error_summary(lines)}", network)
        time.sleep(2 ** (attempt - 1))
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------
# Assembling a root filesystem


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _sha256_file(path: Path | str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _remap(rel: str) -> str:
    """Map a root-relative path to its merged-/usr location."""
    head = rel.split("/", 1)[0]
    return f"usr/{rel}" if head in _MERGED_DIRS else rel


def _subst(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def _ensure_dir(root: Path, rel: str, mode: int = 0o755) -> Path:
    """Create ``rel`` below root, refusing symlinked parents (they could escape root)."""
    cur = root
    parts = [p for p in rel.split("/") if p]
    for i, part in enumerate(parts):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            cur.mkdir()
            # Only the leaf gets the requested mode; parents are plain 0755.
            os.chmod(cur, mode if i == len(parts) - 1 else 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise BuildError(f"/{rel}: /{cur.relative_to(root)} exists and is not a directory")
    return cur


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path)


def _merge_tree(src: Path, root: Path, rel: str, excluded: Callable[[str], bool]) -> None:
    """Move an unpacked package tree into root, applying the /usr merge."""
    with os.scandir(src) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        orig = f"{rel}/{entry.name}" if rel else entry.name
        dest_rel = _remap(orig)
        if excluded("/" + dest_rel):
            continue
        dest = root / dest_rel
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
                _remove(dest)
            _ensure_dir(root, dest_rel, stat.S_IMODE(st.st_mode))
            _merge_tree(Path(entry.path), root, orig, excluded)
            continue
        if not rel and entry.name in _MERGED_DIRS:
            # The top-level /usr links are ours.
            continue
        _ensure_dir(root, posixpath.dirname(dest_rel))
        if dest.is_dir() and not dest.is_symlink():
            shutil.rmtree(dest)
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(entry.path)
            if not target.startswith("/") and dest_rel != orig:
                # Keep a relative link pointing at the same (merged) place.
                absolute = posixpath.normpath(posixpath.join("/", posixpath.dirname(orig), target))
                mapped = "/" + _remap(absolute.lstrip("/")) if absolute != "/" else "/"
                target = posixpath.relpath(mapped, "/" + posixpath.dirname(dest_rel))
            dest.unlink(missing_ok=True)
            os.symlink(target, dest)
        else:
            os.replace(entry.path, dest)


def _resolve_in_root(root: Path, guest: str, hops: int = 40) -> Path | None:
    """Resolve a guest path as the guest would, never leaving root."""
    parts = [p for p in guest.split("/") if p]
    resolved: list[str] = []
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        host = root.joinpath(*resolved, part)
        if host.is_symlink():
            hops -= 1
            if hops < 0:
                return None
            target = os.readlink(host)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p] + parts
            continue
        if not os.path.lexists(host):
            return None
        resolved.append(part)
    return root.joinpath(*resolved)


def _extract(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    proc = subprocess.run(
        ["dpkg-deb", "-x", str(deb), str(dest)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()}")


def _chown(path: Path, owner: tuple[int, int] | None) -> None:
    if owner is not None and os.geteuid() == 0:
        os.lchown(path, *owner)


def _assemble(
    defn: ImageDef,
    debs: list[Path],
    rootfs: Path,
    values: Mapping[str, str],
    progress: Progress | None,
) -> None:
    rootfs.mkdir(mode=0o755)
    os.chmod(rootfs, 0o755)
    if debs or defn.packages:
        for d in ("bin", "sbin", "lib"):
            _ensure_dir(rootfs, f"usr/{d}")
            os.symlink(f"usr/{d}", rootfs / d)
    patterns = [_subst(p, values) for p in defn.exclude]

    def excluded(guest: str) -> bool:
        return any(fnmatch.fnmatchcase(guest, p) for p in patterns)

    if debs:
        staging = rootfs.parent / "staging"
        dests = [staging / str(i) for i in range(len(debs))]
        with ThreadPoolExecutor(max_workers=min(8, len(debs))) as pool:
            list(pool.map(_extract, debs, dests))
        for i, tree in enumerate(dests):
            if progress is not None:
                progress("unpack", i + 1, len(dests))
            _merge_tree(tree, rootfs, "", excluded)
        shutil.rmtree(staging)
        for d in sorted(_MERGED_DIRS - {"bin", "sbin", "lib"}):
            if (rootfs / "usr" / d).is_dir() and not os.path.lexists(rootfs / d):
                os.symlink(f"usr/{d}", rootfs / d)

    for guest in sorted(defn.dirs):
        spec = defn.dirs[guest]
        rel = _remap(_subst(guest, values).lstrip("/"))
        path = _ensure_dir(rootfs, rel, spec.mode)
        os.chmod(path, spec.mode)
        _chown(path, spec.owner)
    for guest in sorted(defn.files):
        fspec = defn.files[guest]
        rel = _remap(_subst(guest, values).lstrip("/"))
        _ensure_dir(rootfs, posixpath.dirname(rel))
        path = rootfs / rel
        if os.path.lexists(path):
            _remove(path)
        path.write_text(_subst(fspec.content, values), encoding="utf-8")
        os.chmod(path, fspec.mode)
        _chown(path, fspec.owner)
    if "ca-bundle" in defn.generate:
        _generate_ca_bundle(rootfs)
    for guest in sorted(defn.symlinks):
        rel = _remap(_subst(guest, values).lstrip("/"))
        _ensure_dir(rootfs, posixpath.dirname(rel))
        path = rootfs / rel
        if os.path.lexists(path):
            _remove(path)
        os.symlink(_subst(defn.symlinks[guest], values), path)
    for want in defn.expect:
        guest = _subst(want, values)
        found = _resolve_in_root(rootfs, guest)
        if found is None or not found.exists():
            raise BuildError(f"{defn.name}: expected {guest} is missing after the build")


def _generate_ca_bundle(rootfs: Path) -> None:
    """What update-ca-certificates would write (its postinst does not run here)."""
    certs_dir = rootfs / "usr/share/ca-certificates"
    certs = sorted(certs_dir.rglob("*.crt")) if certs_dir.is_dir() else []
    if not certs:
        raise BuildError("ca-bundle: no .crt files under /usr/share/ca-certificates")
    chunks = []
    for crt in certs:
        data = crt.read_bytes()
        chunks.append(data if data.endswith(b"\n") else data + b"\n")
    rel = _CA_BUNDLE.lstrip("/")
    _ensure_dir(rootfs, posixpath.dirname(rel))
    target = rootfs / rel
    if os.path.lexists(target):
        _remove(target)
    target.write_bytes(b"".join(chunks))
    os.chmod(target, 0o644)


def _scan(rootfs: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """Manifest entries of every path below rootfs, and the total file size."""
    files: dict[str, dict[str, Any]] = {}
    total = 0
    base = str(rootfs)
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                files[rel] = {"type": "symlink", "target": os.readlink(full)}
            elif stat.S_ISDIR(st.st_mode):
                files[rel] = {"type": "dir", "mode": stat.S_IMODE(st.st_mode)}
            elif stat.S_ISREG(st.st_mode):
                files[rel] = {
                    "type": "file",
                    "size": st.st_size,
                    "mtime_ns": st.st_mtime_ns,
                    "ino": st.st_ino,
                    "mode": stat.S_IMODE(st.st_mode),
                    "sha256": _sha256_file(full),
                }
                total += st.st_size
            else:
                raise BuildError(f"/{rel}: unexpected file type in the image")
    return dict(sorted(files.items())), total


_KINDS = {"file": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK}


def _verify_entry(entry: Path, level: Verify) -> dict[str, Any] | None:
    """The entry's manifest if the entry is intact, else None.

    "quick" hashes a file only when its size, mtime or inode differs from the manifest (a write, a
    replacement, a copy of the cache); "full" hashes every file and checks every symlink. Nothing
    outside the manifest may appear either (a planted /etc/ld.so.preload is a change too).
    """
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        return None
    base = str(entry / "rootfs")
    files = manifest.get("files")
    if not isinstance(files, dict) or not os.path.isdir(base):
        return None
    try:
        for rel, meta in files.items():
            full = os.path.join(base, rel)
            st = os.lstat(full)
            kind = meta["type"]
            if not _KINDS[kind](st.st_mode):
                return None
            if kind == "file":
                if st.st_size != meta["size"] or stat.S_IMODE(st.st_mode) != meta["mode"]:
                    return None
                changed = st.st_mtime_ns != meta["mtime_ns"] or st.st_ino != meta.get("ino", st.st_ino)
                if (level == "full" or changed) and _sha256_file(full) != meta["sha256"]:
                    return None
            elif kind == "symlink" and os.readlink(full) != meta["target"]:
                return None
        if level == "full" and _extra_paths(base, files):
            return None
    except (OSError, KeyError, TypeError):
        return None
    return manifest


def _extra_paths(base: str, files: dict[str, Any]) -> list[str]:
    """Paths below base that the manifest does not list."""
    extra = []
    for dirpath, dirnames, filenames in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in files:
                extra.append(rel)
    return extra


def verify_report(entry: Path) -> list[str]:
    """Every difference between an entry and its manifest (empty when intact): `xrun images verify`."""
    try:
        manifest = json.loads((entry / "manifest.json").read_text(encoding="utf-8"))
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return ["manifest.json is missing or unreadable"]
    base = str(entry / "rootfs")
    out = []
    for rel, meta in files.items():
        full = os.path.join(base, rel)
        try:
            st = os.lstat(full)
        except OSError:
            out.append(f"/{rel}: missing")
            continue
        kind = meta.get("type")
        if kind not in _KINDS or not _KINDS[kind](st.st_mode):
            out.append(f"/{rel}: no longer a {kind}")
        elif kind == "file" and (st.st_size != meta.get("size") or _sha256_file(full) != meta.get("sha256")):
            out.append(f"/{rel}: content changed")
        elif kind == "file" and stat.S_IMODE(st.st_mode) != meta.get("mode"):
            out.append(f"/{rel}: mode changed to {stat.S_IMODE(st.st_mode):o}")
        elif kind == "symlink" and os.readlink(full) != meta.get("target"):
            out.append(f"/{rel}: symlink now points to {os.readlink(full)}")
    out += [f"/{rel}: not in the image's manifest" for rel in _extra_paths(base, files)]
    return out


def _tree_size(path: Path) -> int:
    total = 0
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, n)).st_size
    return total


def _rmtree(path: Path) -> int:
    """Remove path (making read-only dirs writable first); return bytes freed."""
    if not os.path.lexists(path):
        return 0
    size = _tree_size(path)
    if path.is_dir() and not path.is_symlink():
        # Unpacked packages may contain read-only directories (non-root can't empty them).
        os.chmod(path, 0o755)
        for dirpath, dirnames, _names in os.walk(path):
            for d in dirnames:
                full = os.path.join(dirpath, d)
                if not os.path.islink(full):
                    os.chmod(full, 0o755)
        shutil.rmtree(path)
    else:
        path.unlink()
    return size


# --------------------------------------------------------------------------
# The store


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
        if arch not in ARCH_INFO:
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

    class _TryLock:
        def __init__(self, lock: FileLock) -> None:
            self.lock = lock
            self.held = False

        def __enter__(self) -> bool:
            try:
                self.lock.acquire(timeout=0)
                self.held = True
            except Timeout:
                self.held = False
            return self.held

        def __exit__(self, *exc: object) -> None:
            if self.held:
                self.lock.release()

    def _try_lock(self, what: str) -> ImageStore._TryLock:
        return ImageStore._TryLock(self._lock(what))

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
        defs = load_definitions(self.definitions_dir)
        defn = defs.get(name)
        if defn is None:
            raise UnknownImage(f"unknown image {name!r}")
        def_hashes = {p.name: _sha256_file(p) for p in defn.sources}
        info = ARCH_INFO[arch]
        rootfs_dir = self.cache_dir / "rootfs"
        rootfs_dir.mkdir(parents=True, exist_ok=True)
        tmp = rootfs_dir / f".tmp-{name}-{arch}-{os.getpid()}x{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            suite: str | None = None
            suite_version = ""
            repo: _AptRepo | None = None
            pkgs: list[_Pkg] = []
            debs: list[Path] = []
            apt_lock = self._lock(f"apt-{arch}")
            # Held until the .debs are unpacked so prune cannot remove them midway.
            with apt_lock:
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
                    entry = rootfs_dir / f"{name}-{arch}-{key[:12]}"
                    if _verify_entry(entry, verify) is not None:
                        # Same inputs as an entry already built: only the index was stale.
                        self._write_index(name, arch, entry, key, def_hashes)
                        return entry
                    if repo is None or not pkgs:
                        break
                    try:
                        debs = repo.download(pkgs, self.apt_attempts, progress)
                        break
                    except _AptFailure as exc:
                        if not second_round and " 404 " in f" {exc} ":
                            continue
                        raise ImageUnavailable(
                            f"{name} for {arch}: could not download packages from Debian "
                            f"{suite} ({exc}). Run `xrun images build {name} --arch {arch}` "
                            f"on a machine that reaches a Debian mirror."
                        ) from exc
                values = {
                    "arch": arch,
                    "musl_arch": info.musl_arch,
                    "glibc_loader": info.glibc_loader,
                    "suite": suite or "",
                    "suite_version": suite_version,
                }
                _assemble(defn, debs, tmp / "rootfs", values, progress)
            if progress is not None:
                progress("manifest", 0, 1)
            files, total = _scan(tmp / "rootfs")
            manifest = {
                "format": _MANIFEST_FORMAT,
                "name": name,
                "arch": arch,
                "suite": suite,
                "key": key,
                "engine": ENGINE_VERSION,
                "definitions": def_hashes,
                "description": defn.description,
                "fidelity": defn.fidelity,
                "reference": {"image": defn.reference.image, "digest": defn.reference.digest},
                "exact": False,
                "packages": [
                    {"name": p.name, "version": p.version, "arch": p.arch, "sha256": p.sha256} for p in pkgs
                ],
                "total_size": total,
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files,
            }
            # Written last: an entry without a manifest is never used.
            _write_atomic(tmp / "manifest.json", json.dumps(manifest, indent=1) + "\n")
            if os.path.lexists(entry):
                _rmtree(entry)
            os.rename(tmp, entry)
        finally:
            if tmp.exists():
                _rmtree(tmp)
        self._write_index(name, arch, entry, key, def_hashes)
        with open(self.cache_dir / "builds.log", "a", encoding="utf-8") as log:
            record = {
                "name": name,
                "arch": arch,
                "key": key,
                "suite": suite,
                "seconds": round(time.monotonic() - started, 3),
                "pid": os.getpid(),
                "time": manifest["built_at"],
            }
            log.write(json.dumps(record) + "\n")
        if progress is not None:
            progress("done", 1, 1)
        return entry

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
