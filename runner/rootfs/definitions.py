"""Image definitions (``images/<name>.yaml``): parsing, validation located by file:line:key, ``extends``.

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

``forms`` (mapping name -> {user, workdir})
    Other ways to run the same root filesystem, named ``<image>:<form>`` in a
    matrix (``distroless-static:nonroot``): ``user`` is an image config User
    (``"65532:65532"``, or a name in the image's /etc/passwd), ``workdir`` an
    absolute WorkingDir.

``owner`` is ``"uid:gid"``; it is recorded in the image's owners.json (see
rootfs/owners.py) and applied in the layer the docker engine loads.
Paths, symlink targets, exclude/expect patterns and file contents may use
``{arch}``, ``{musl_arch}``, ``{glibc_loader}``, ``{suite}`` and
``{suite_version}``; other braces are left alone.
"""

from __future__ import annotations

import functools
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from .. import paths
from ..errors import RecipeError
from ..yamlcheck import line_of, must_be, unknown_key

T = TypeVar("T")

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
        "forms",
    }
)
_PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_MODE_RE = re.compile(r"^[0-7]{3,4}$")
_OWNER_RE = re.compile(r"^\d+:\d+$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_PLACEHOLDER_RE = re.compile(r"\{([a-z_]+)\}")


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


@dataclass(frozen=True)
class FormSpec:
    """A form of an image (``distroless-static:nonroot``): the config a cell of it runs with."""

    user: str | None = None
    workdir: str | None = None

    def config(self) -> dict[str, str]:
        """As an image config (engines/imageconfig.py reads it like an image's config.json)."""
        return {k: v for k, v in (("user", self.user), ("workdir", self.workdir)) if v}


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
    forms: Mapping[str, FormSpec] = field(default_factory=dict)
    # Definition files it was made from, the extends root first.
    sources: tuple[Path, ...] = ()


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
    forms: dict[str, FormSpec]


class _Checker:
    """Validation helpers that know the file and the YAML line numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, line: int | None, key: str, message: str) -> RecipeError:
        return RecipeError(self.path, line, key, message)

    @staticmethod
    def key_line(node: Any, key: Any) -> int | None:
        return line_of(node, key)

    @staticmethod
    def item_line(node: Any, index: int) -> int | None:
        return line_of(node, index)

    def string(self, value: Any, line: int | None, key: str) -> str:
        if not isinstance(value, str):
            raise self.fail(line, key, must_be("a string", value))
        return str(value)

    def mapping(self, value: Any, line: int | None, key: str) -> Mapping[Any, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(line, key, must_be("a mapping", value))
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
                raise self.fail(self.key_line(node, k), name, unknown_key(str(k), sorted(allowed)))


    def entries(self, doc: Mapping[Any, Any], key: str, value: Callable[[Any, int | None, str], T]) -> dict[str, T]:
        """A ``path -> value`` section (files, dirs, symlinks): keys are guest paths, values parsed by `value`."""
        out: dict[str, T] = {}
        if doc.get(key) is None:
            return out
        node = self.mapping(doc[key], self.key_line(doc, key), key)
        for k, v in node.items():
            kl = self.key_line(node, k)
            p = self.guest_path(k, kl, f"{key}[{k}]")
            out[p] = value(v, kl, f"{key}[{p}]")
        return out

    def mode_owner(self, node: Mapping[Any, Any], where: str, mode: int) -> tuple[int, tuple[int, int] | None]:
        """The optional ``mode`` (else `mode`) and ``owner`` of a file or dir mapping."""
        if "mode" in node:
            mode = self.mode(node["mode"], self.key_line(node, "mode"), f"{where}.mode")
        owner = None
        if "owner" in node:
            owner = self.owner(node["owner"], self.key_line(node, "owner"), f"{where}.owner")
        return mode, owner

    def file_spec(self, value: Any, line: int | None, where: str) -> FileSpec:
        if isinstance(value, str):
            return FileSpec(content=str(value))
        fmap = self.mapping(value, line, where)
        self.only_keys(fmap, frozenset({"content", "mode", "owner"}), where)
        if "content" not in fmap:
            raise self.fail(line, f"{where}.content", "is required")
        content = self.string(fmap["content"], self.key_line(fmap, "content"), f"{where}.content")
        mode, owner = self.mode_owner(fmap, where, 0o644)
        return FileSpec(content=content, mode=mode, owner=owner)

    def dir_spec(self, value: Any, line: int | None, where: str) -> DirSpec:
        if not isinstance(value, Mapping):
            return DirSpec(mode=self.mode(value, line, where))
        self.only_keys(value, frozenset({"mode", "owner"}), where)
        mode, owner = self.mode_owner(value, where, 0o755)
        return DirSpec(mode=mode, owner=owner)

    def form_spec(self, name: Any, value: Any, line: int | None) -> FormSpec:
        where = f"forms.{name}"
        if not isinstance(name, str) or not re.match(r"^[a-z0-9][a-z0-9._-]*$", name):
            raise self.fail(line, where, "a form name is lower-case letters, digits, '.', '_' and '-'")
        fmap = self.mapping(value, line, where)
        self.only_keys(fmap, frozenset({"user", "workdir"}), where)
        user = workdir = None
        if "user" in fmap:
            user = self.string(fmap["user"], self.key_line(fmap, "user"), f"{where}.user")
            if not re.match(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$", user):
                raise self.fail(self.key_line(fmap, "user"), f"{where}.user", 'must be "uid[:gid]" or "name[:group]"')
        if "workdir" in fmap:
            workdir = self.guest_path(fmap["workdir"], self.key_line(fmap, "workdir"), f"{where}.workdir")
        return FormSpec(user, workdir)

    def symlink_target(self, value: Any, line: int | None, where: str) -> str:
        target = self.string(value, line, where)
        if not target:
            raise self.fail(line, where, "target must not be empty")
        self.placeholders(target, line, where)
        return target


def _parse_file(path: Path) -> _Raw:
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
            alts = [a.strip() for a in spec.split("|")]
            for alt in alts:
                if not _PKG_RE.match(alt):
                    raise c.fail(c.item_line(node, i), f"packages[{i}]", f"{alt!r} is not a Debian package name")
            packages.append(" | ".join(alts))

    files = c.entries(doc, "files", c.file_spec)
    dirs = c.entries(doc, "dirs", c.dir_spec)
    symlinks = c.entries(doc, "symlinks", c.symlink_target)

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

    forms: dict[str, FormSpec] = {}
    if doc.get("forms") is not None:
        fnode = c.mapping(doc["forms"], kline("forms"), "forms")
        for k, v in fnode.items():
            forms[str(k)] = c.form_spec(k, v, c.key_line(fnode, k))

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
        forms=forms,
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
            forms=dict(raw.forms),
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
        forms={**base.forms, **raw.forms},
        sources=(*base.sources, raw.path),
    )


def form_config(image: str, dir: Path | None = None) -> dict[str, str] | None:
    """The config of a builtin image's form (``distroless-static:nonroot``), or None for a plain name."""
    base, sep, form = image.partition(":")
    if not sep:
        return None
    defn = load_definitions(dir).get(base)       # parsed once per process (cells ask per launch)
    spec = defn.forms.get(form) if defn is not None else None
    return spec.config() if spec is not None else None


def image_names(defs: Mapping[str, ImageDef]) -> list[str]:
    """Every name a matrix may use for these definitions: each image and each of its forms."""
    return sorted({*defs, *(f"{n}:{f}" for n, d in defs.items() for f in d.forms)})


def load_definitions(dir: Path | None = None) -> dict[str, ImageDef]:
    """Parse and validate every ``<dir>/*.yaml``; raise RecipeError on the first error.

    Parsed once per process for an unchanged directory (the matrix, the store and the report all ask)."""
    directory = dir if dir is not None else _default_definitions_dir()
    try:
        stamp = tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.glob("*.yaml")))
    except OSError:
        stamp = ()
    return dict(_load_definitions(str(directory), stamp))


@functools.lru_cache(maxsize=8)
def _load_definitions(directory_s: str, stamp: tuple[tuple[str, int, int], ...]) -> dict[str, ImageDef]:
    directory = Path(directory_s)
    raws: dict[str, _Raw] = {}
    for path in sorted(directory.glob("*.yaml")):
        raw = _parse_file(path)
        raws[raw.name] = raw
    return {name: _merge(raws, name) for name in sorted(raws)}


def _subst(text: str, values: Mapping[str, str]) -> str:
    """Expand the known placeholders; other braces are left alone."""
    return _PLACEHOLDER_RE.sub(lambda m: values.get(m.group(1), m.group(0)), text)
