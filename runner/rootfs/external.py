"""Container images users bring from elsewhere, unpacked one platform at a time into a cache.

A `docker save` tarball, an OCI image layout (a directory or a tar of one), or a bare root filesystem
(a directory or a tarball). No network: everything an image needs is in what the user points at.
Every blob is checked against its digest as it is read. Layers are applied entry by entry over
`tarfile`'s stream reader, not with `extractall`: absolute symlinks (`/usr/lib/libc.so`) are normal in
an image, while anything that could land outside the root (absolute names, `..`, a write through a
symlink, a hard link out of the root, a relative symlink climbing above it, a device node) is refused,
naming the archive and the entry. Ownership is recorded in owners.json, not applied (rootfs/owners.py:
the docker engine's layer carries it; the local engine's cell user owns the files), setuid/setgid bits are
dropped, fifos are skipped (nothing a cross-built binary under qemu-user needs).

Layout of ``cache_dir/external``: ``<digest16>-<os>-<arch>[-<variant>]/{rootfs/,config.json,complete}``
(immutable once renamed into place; keyed by the manifest digest) and ``locks/<key>.lock``.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import importlib
import io
import json
import lzma
import os
import re
import secrets
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from filelock import FileLock

from ._fs import _rmtree, _write_atomic
from .owners import write_owners
from .rootwriter import ImageSourceError as ImageSourceError
from .rootwriter import Readable, RootWriter, _split

#: The kinds of image source, as in `KIND:LOCATION`.
KINDS = ("docker-archive", "oci", "oci-archive", "dir", "tar", "docker")

Platform = tuple[str, str, str | None]

_INDEX_TYPES = {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
_MANIFEST_TYPES = {"application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"}
# docker's own layer type is `...rootfs.diff.tar.gzip`; OCI's are `...layer.v1.tar[+gzip|+zstd]`
_LAYER_SUFFIXES = ("tar", "tar+gzip", "tar.gzip", "tar+zstd", "tar.zstd")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}\Z")
_NAMED_BY_DIGEST = re.compile(r"(?:^|/)([0-9a-f]{64})(?:\.json)?\Z")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")
_OPAQUE = ".wh..wh..opq"
_JSON_LIMIT = 16 << 20
_CHUNK = 1 << 20
_SETID = stat.S_ISUID | stat.S_ISGID
_INDEX_DEPTH = 4


@dataclass(frozen=True)
class ImageConfig:
    """What the image says about running it, and which manifest it came from.

    `user` is the config's User as written ("65532", "65532:65532", "nonroot"), `env` its Env split at
    the first "=", `os`/`arch`/`variant` the platform of the manifest used (the requested one for a bare
    rootfs, which says nothing), `digest` the manifest's ("sha256:..."); for a legacy `docker save`,
    which has no manifest blob, the config's (docker's image id); for dir:/tar: the content's.
    """

    user: str | None
    env: tuple[tuple[str, str], ...]
    workdir: str | None
    os: str | None
    arch: str | None
    variant: str | None
    digest: str


@dataclass(frozen=True)
class UnpackedImage:
    """One platform's root filesystem in the cache (for read-only use) and its config."""

    root: Path
    config: ImageConfig


@dataclass(frozen=True)
class _Layer:
    name: str                 # where the layer is in the layout
    digest: str | None        # of the blob as stored (None: legacy docker save, checked by diff_id)
    media_type: str | None


@dataclass(frozen=True)
class _Image:
    platform: Platform
    digest: str
    config_name: str
    config_digest: str
    layers: tuple[_Layer, ...]


def parse_source(text: str) -> tuple[str, str]:
    """'docker-archive:images/x.tar' -> ('docker-archive', 'images/x.tar')."""
    kind, sep, location = text.partition(":")
    if not sep or kind not in KINDS:
        what = f"unknown image source kind {kind!r}" if sep else f"{text!r} is not KIND:LOCATION"
        raise ImageSourceError(f"{what} (kinds: {', '.join(KINDS)})", key="image")
    if not location:
        raise ImageSourceError(f"{text!r} names no location after {kind}:", key="image")
    return kind, location


def platforms_of(kind: str, location: Path) -> list[Platform]:
    """The (os, arch, variant) platforms the image offers; [] for dir:/tar: (a bare rootfs says nothing)."""
    _check_kind(kind)
    if kind in ("dir", "tar"):
        _check_exists(kind, location)
        return []
    with _open_layout(kind, location) as layout:
        return list(dict.fromkeys(img.platform for img in _images(kind, layout)))


def unpack(
    kind: str, location: Path, *, os_: str, arch: str, variant: str | None, cache_dir: Path
) -> UnpackedImage:
    """The root filesystem of the manifest for that platform, unpacked once into cache_dir and reused.

    Parallel runs share an entry: one unpacks it under a file lock into a temp dir and renames it
    into place; the others wait and reuse it.
    """
    _check_kind(kind)
    label = str(location)
    if kind in ("dir", "tar"):
        _check_exists(kind, location)
        if kind == "dir":
            digest = _dir_digest(location, label)
            fill: Callable[[RootWriter], None] = lambda w: _copy_dir(location, w, label)  # noqa: E731
        else:
            with open(location, "rb") as f:
                digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
            fill = lambda w: _extract_tarball(location, w, label)  # noqa: E731
        return _cached(cache_dir, ImageConfig(None, (), None, os_, arch, variant, digest), fill)
    with _open_layout(kind, location) as layout:
        image = _select(_images(kind, layout), (os_, arch, variant), label)
        doc = _doc(layout, image.config_name, image.config_digest)
        config = _image_config(doc, image)
        return _cached(cache_dir, config, lambda w: _apply_layers(layout, image, doc, w))


# -- sources -------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    parse_source(f"{kind}:-")
    if kind == "docker":
        # parse_source accepts it; reading it is the docker engine's business, not this module's
        raise ImageSourceError("docker: images are read through the docker daemon", key="image")


def _check_exists(kind: str, location: Path) -> None:
    if kind in ("dir", "oci") and not location.is_dir():
        raise ImageSourceError(f"no such directory ({kind}: names a directory)", file=str(location))
    if kind not in ("dir", "oci") and not location.is_file():
        raise ImageSourceError(f"no such file ({kind}: names a file)", file=str(location))


class _Layout:
    """The files of an OCI image layout or a `docker save`, in a directory or a tar archive."""

    def __init__(self, label: str, directory: Path | None, archive: tarfile.TarFile | None) -> None:
        self.label = label
        self._dir = directory
        self._tar = archive
        self._members: dict[str, tarfile.TarInfo] = {}
        if archive is not None:
            for m in archive.getmembers():
                self._members[_archive_name(m.name)] = m

    def has(self, name: str) -> bool:
        if self._dir is not None:
            return (self._dir / name).is_file()
        m = self._members.get(_archive_name(name))
        return m is not None and (m.isfile() or m.issym() or m.islnk())

    def open(self, name: str) -> IO[bytes]:
        """One file of the layout, or ImageSourceError naming it."""
        norm = _archive_name(name)
        if norm.startswith("/") or ".." in norm.split("/"):
            raise ImageSourceError(f"refers to {name!r}, outside the image", file=self.label)
        f: IO[bytes] | None = None
        with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError, KeyError):
            if self._dir is not None:
                return open(self._dir / norm, "rb")
            m = self._members.get(norm)
            f = self._tar.extractfile(m) if self._tar is not None and m is not None else None
        if f is None:
            raise ImageSourceError(f"{name} is missing: the image is incomplete", file=self.label)
        return f


@contextlib.contextmanager
def _open_layout(kind: str, location: Path) -> Iterator[_Layout]:
    label = str(location)
    _check_exists(kind, location)
    if kind == "oci":
        yield _Layout(label, location, None)
        return
    with contextlib.ExitStack() as stack:
        try:
            layout = _Layout(label, None, stack.enter_context(tarfile.open(location, "r:*")))
        except tarfile.ReadError:
            raise ImageSourceError("not a tar archive (plain, gzip, bzip2 or xz)", file=label) from None
        except _read_errors(OSError) as e:
            raise ImageSourceError(f"cannot read it as a tar archive: {e}", file=label) from None
        yield layout


def _archive_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _images(kind: str, layout: _Layout) -> list[_Image]:
    """Every image the layout holds, one per manifest (docker 25+ writes an OCI layout in `docker save`)."""
    images = _oci_images(layout) if layout.has("index.json") else []
    if not images and kind == "docker-archive" and layout.has("manifest.json"):
        images = _docker_images(layout)
    if not images:
        what = "index.json or manifest.json" if kind == "docker-archive" else "index.json"
        raise ImageSourceError(f"holds no image (no usable {what}); is it a {kind}?", file=layout.label)
    return images


def _oci_images(layout: _Layout) -> list[_Image]:
    out: list[_Image] = []
    seen: set[str] = set()
    label = layout.label

    def walk(index: dict[str, Any], where: str, depth: int) -> None:
        manifests = index.get("manifests")
        if not isinstance(manifests, list):
            raise ImageSourceError(f"{where} has no manifests list", file=label)
        for d in manifests:
            d = _obj(d, f"a descriptor in {where}", label)
            digest = _digest(d.get("digest"), label)
            mt, plat = d.get("mediaType"), d.get("platform")
            if digest in seen or (isinstance(plat, dict) and plat.get("os") == "unknown"):
                continue  # a manifest listed twice, or buildx's attestations (platform unknown/unknown)
            seen.add(digest)
            if mt is not None and mt not in _INDEX_TYPES | _MANIFEST_TYPES:
                continue  # an artifact that is not an image
            if not layout.has(_blob(digest)):
                continue  # a platform whose content this archive does not carry
            doc = _doc(layout, _blob(digest), digest)
            if mt in _INDEX_TYPES or (mt is None and "manifests" in doc):
                if depth >= _INDEX_DEPTH:
                    raise ImageSourceError("image indexes nest too deep", file=label)
                walk(doc, digest, depth + 1)
            else:
                out.append(_oci_image(layout, digest, doc, plat))

    walk(_doc(layout, "index.json", None), "index.json", 0)
    return out


def _oci_image(layout: _Layout, digest: str, doc: dict[str, Any], plat: Any) -> _Image:
    label = layout.label
    config_digest = _digest(_obj(doc.get("config"), f"{digest} config", label).get("digest"), label)
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise ImageSourceError(f"manifest {digest} has no layers list", file=label)
    layers = []
    for ld in (_obj(v, f"a layer of {digest}", label) for v in layers_doc):
        dg = _digest(ld.get("digest"), label)
        layers.append(_Layer(_blob(dg), dg, _text(ld.get("mediaType"))))
    if isinstance(plat, dict) and isinstance(plat.get("os"), str) and isinstance(plat.get("architecture"), str):
        platform = (plat["os"], plat["architecture"], _text(plat.get("variant")))
    else:
        platform = _config_platform(_doc(layout, _blob(config_digest), config_digest), label)
    return _Image(platform, digest, _blob(config_digest), config_digest, tuple(layers))


def _docker_images(layout: _Layout) -> list[_Image]:
    """The images of a `docker save` older than docker 25: manifest.json, configs, layer tars."""
    label = layout.label
    entries = _parse(_read_small(layout, "manifest.json", None), "manifest.json", label)
    if not isinstance(entries, list):
        raise ImageSourceError("manifest.json is not a list of images", file=label)
    out: list[_Image] = []
    seen: set[str] = set()
    for e in entries:
        e = _obj(e, "an entry of manifest.json", label)
        config_name, layers = e.get("Config"), e.get("Layers")
        if not isinstance(config_name, str) or not isinstance(layers, list) \
                or not all(isinstance(n, str) for n in layers):
            raise ImageSourceError("an entry of manifest.json lacks Config or Layers", file=label)
        # docker names the config by its digest; that is its image id and what keys the cache
        named = _NAMED_BY_DIGEST.search(config_name)
        raw = _read_small(layout, config_name, f"sha256:{named[1]}" if named else None)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        platform = _config_platform(_obj(_parse(raw, config_name, label), config_name, label), label)
        out.append(_Image(platform, digest, config_name, digest, tuple(_Layer(n, None, None) for n in layers)))
    return out


def matching(offered: list[Platform], want: Platform) -> list[Platform]:
    """The offered platforms that serve `want`: its exact platform, else the arch's only one if the
    variants allow (either side names none). The plan (expand.py) and unpack choose alike."""
    same = [p for p in offered if p[:2] == want[:2]]
    pick = [p for p in same if p[2] == want[2]]
    if not pick and len(same) == 1 and (want[2] is None or same[0][2] is None):
        pick = same
    return pick


def _select(images: list[_Image], want: Platform, label: str) -> _Image:
    """The image for `want`: its exact platform, else the arch's only manifest if the variants allow."""
    chosen = matching([i.platform for i in images], want)
    pick = [i for i in images if i.platform in chosen]
    if not pick:
        offered = ", ".join(sorted({_fmt(i.platform) for i in images}))
        raise ImageSourceError(f"the image offers {offered}, not {_fmt(want)}", file=label)
    if len(pick) > 1:
        raise ImageSourceError(
            f"holds {len(pick)} images for {_fmt(want)} ({', '.join(i.digest for i in pick)}); "
            "save one image per archive", file=label)
    return pick[0]


def _fmt(p: Platform) -> str:
    return "/".join(x for x in p if x)


def _config_platform(config: dict[str, Any], label: str) -> Platform:
    os_, arch = config.get("os"), config.get("architecture")
    if not isinstance(os_, str) or not isinstance(arch, str):
        raise ImageSourceError("the image config names no os and architecture", file=label)
    return (os_, arch, _text(config.get("variant")))


def _image_config(doc: dict[str, Any], image: _Image) -> ImageConfig:
    c: dict[str, Any] = doc["config"] if isinstance(doc.get("config"), dict) else {}
    env: list[Any] = c["Env"] if isinstance(c.get("Env"), list) else []
    pairs = tuple((k, v) for k, _, v in (e.partition("=") for e in env if isinstance(e, str)))
    return ImageConfig(_text(c.get("User")), pairs, _text(c.get("WorkingDir")), *image.platform, image.digest)


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _obj(v: Any, what: str, label: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise ImageSourceError(f"{what} is not a JSON object", file=label)
    return v


def _digest(v: Any, label: str) -> str:
    if not isinstance(v, str) or not _DIGEST.match(v):
        raise ImageSourceError(f"unsupported or malformed digest {v!r} (expected sha256:<64 hex>)", file=label)
    return v


def _blob(digest: str) -> str:
    return "blobs/sha256/" + digest.removeprefix("sha256:")


def _read_small(layout: _Layout, name: str, digest: str | None) -> bytes:
    """A small file of the layout (a JSON document), checked against its digest."""
    with layout.open(name) as f:
        raw = f.read(_JSON_LIMIT + 1)
    if len(raw) > _JSON_LIMIT:
        raise ImageSourceError(f"{name} is larger than {_JSON_LIMIT >> 20} MiB; not an image document",
                               file=layout.label)
    if digest is not None:
        _compare(digest, "sha256:" + hashlib.sha256(raw).hexdigest(), name, layout.label)
    return raw


def _doc(layout: _Layout, name: str, digest: str | None) -> dict[str, Any]:
    """A JSON object of the layout, checked against its digest."""
    return _obj(_parse(_read_small(layout, name, digest), name, layout.label), name, layout.label)


def _parse(raw: bytes, name: str, label: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ImageSourceError(f"{name} is not valid JSON: {e}", file=label) from None


def _compare(want: str, got: str, what: str, label: str) -> None:
    if got != want:
        raise ImageSourceError(
            f"{what}: content is {got}, not the {want} it is named by; the file is corrupt or was altered",
            file=label)


# -- layers --------------------------------------------------------------------


class _Verified(io.RawIOBase):
    """A stream that hashes what is read through it; `check` reads the rest and compares."""

    def __init__(self, raw: Readable, digest: str | None, what: str, label: str) -> None:
        super().__init__()
        self._raw, self._digest, self._what, self._label = raw, digest, what, label
        self._hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        self._hash.update(data)
        return len(data)

    def check(self) -> None:
        if self._digest is None:
            return
        while data := self._raw.read(_CHUNK):
            self._hash.update(data)
        _compare(self._digest, "sha256:" + self._hash.hexdigest(), self._what, self._label)


def _read_errors(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    """What a corrupt archive raises while it is read (not what a full disk does), and `extra`."""
    errors: list[type[BaseException]] = [tarfile.TarError, EOFError, zlib.error, lzma.LZMAError,
                                         gzip.BadGzipFile, *extra]
    with contextlib.suppress(ImportError):
        errors.append(importlib.import_module("zstandard").ZstdError)
    return tuple(errors)


def _decompressed(stream: io.BufferedReader, label: str) -> Readable:
    """The stream uncompressed, by its magic bytes (media types and file names are not trusted)."""
    head = stream.peek(6)[:6]
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=stream, mode="rb")
    if head.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            zstd = importlib.import_module("zstandard")
        except ImportError:
            raise ImageSourceError(
                "is zstd-compressed; reading it needs the zstandard module (pip install zstandard)",
                file=label) from None
        reader: Readable = zstd.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return reader
    if head.startswith(b"BZh"):
        return bz2.BZ2File(stream)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(stream)
    return stream


def _apply_layers(layout: _Layout, image: _Image, config: dict[str, Any], writer: RootWriter) -> None:
    rootfs = config.get("rootfs")
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if isinstance(ids, list) and len(ids) == len(image.layers):
        diff_ids: list[str | None] = [_digest(i, layout.label) for i in ids]
    elif all(layer.digest for layer in image.layers):
        diff_ids = [None] * len(image.layers)
    else:
        raise ImageSourceError("the config's rootfs.diff_ids do not match its layers, so the layers "
                               "cannot be verified", file=layout.label)
    for layer, diff_id in zip(image.layers, diff_ids, strict=True):
        label = f"{layout.label}:{layer.name}"
        if layer.media_type is not None and not layer.media_type.endswith(_LAYER_SUFFIXES):
            raise ImageSourceError(f"layer media type {layer.media_type!r} is not supported "
                                   "(tar, tar+gzip, tar+zstd)", file=label)
        writer.layer(label)
        with layout.open(layer.name) as f:
            _apply_stream(f, writer, layer.digest, diff_id, whiteouts=True)


def _extract_tarball(path: Path, writer: RootWriter, label: str) -> None:
    writer.layer(label)
    with open(path, "rb") as f:
        _apply_stream(f, writer, None, None, whiteouts=False)


def _apply_stream(raw: Readable, writer: RootWriter, digest: str | None, diff_id: str | None, *,
                  whiteouts: bool) -> None:
    """Apply one tar stream (compressed or not), checking the blob and its uncompressed content."""
    label = writer.label
    blob = _Verified(raw, digest, "layer", label)
    try:
        plain = _Verified(_decompressed(io.BufferedReader(blob, _CHUNK), label), diff_id,
                          "layer (uncompressed, the config's diff_id)", label)
        with tarfile.open(fileobj=plain, mode="r|") as tf:
            for m in tf:
                _apply_entry(tf, m, writer, whiteouts)
        plain.check()
        blob.check()
    except _read_errors() as e:
        raise ImageSourceError(f"cannot read it as a tar archive: {e}", file=label) from None


def _apply_entry(tf: tarfile.TarFile, m: tarfile.TarInfo, writer: RootWriter, whiteouts: bool) -> None:
    entry = m.name
    parts = _split(entry)
    if parts is None:
        why = "absolute path" if entry.startswith("/") else "a path component is '..'"
        raise writer.error(entry, f"{why}; an image entry must stay inside the image root")
    if not parts:
        return  # the root directory itself
    with writer.entry(entry):
        if whiteouts and parts[-1].startswith(".wh."):
            writer.whiteout(entry, parts)
        elif m.isdir():
            writer.directory(entry, parts, m.mode, m.mtime)
        elif m.issym():
            writer.symlink(entry, parts, m.linkname, m.mtime)
        elif m.islnk():
            writer.hardlink(entry, parts, m.linkname)
        elif m.ischr() or m.isblk():
            raise writer.error(entry, "a device node; an image run rootless may not carry one")
        elif m.isfifo():
            pass  # skipped: a fifo in an image is runtime state nobody needs
        elif m.isreg():
            data = tf.extractfile(m)
            assert data is not None
            writer.file(entry, parts, m.mode, m.mtime, data)
        else:
            raise writer.error(entry, f"unsupported tar entry type {m.type!r}")
        if not m.isfifo() and not (whiteouts and parts[-1].startswith(".wh.")):
            writer.own(parts, m.uid, m.gid)


# -- bare root filesystems -----------------------------------------------------


def _walk(top: Path, parts: tuple[str, ...] = ()) -> Iterator[tuple[list[str], os.DirEntry[str]]]:
    """Every entry under top, parents first, sorted, not following symlinks."""
    with os.scandir(top.joinpath(*parts)) as it:
        entries = sorted(it, key=lambda e: e.name)
    for e in entries:
        yield [*parts, e.name], e
        if e.is_dir(follow_symlinks=False):
            yield from _walk(top, (*parts, e.name))


def _dir_digest(top: Path, label: str) -> str:
    """sha256 over a canonical walk: each entry's path, type, mode, link target or content."""
    h = hashlib.sha256()

    def field(b: bytes) -> None:
        h.update(len(b).to_bytes(8, "big") + b)

    rel = ""
    try:
        for parts, e in _walk(top):
            rel = "/".join(parts)
            st = e.stat(follow_symlinks=False)
            field(os.fsencode(rel))
            field(f"{stat.S_IFMT(st.st_mode):o} {stat.S_IMODE(st.st_mode):o}".encode())
            if stat.S_ISLNK(st.st_mode):
                field(os.fsencode(os.readlink(e.path)))
            elif stat.S_ISREG(st.st_mode):
                with open(e.path, "rb") as f:
                    field(hashlib.file_digest(f, "sha256").digest())
    except OSError as e:
        raise ImageSourceError(f"cannot read it: {e}", file=label, key=rel or None) from None
    return "sha256:" + h.hexdigest()


def _copy_dir(top: Path, writer: RootWriter, label: str) -> None:
    writer.layer(label)
    for parts, e in _walk(top):
        rel = "/".join(parts)
        with writer.entry(rel):
            st = e.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                writer.directory(rel, parts, st.st_mode, st.st_mtime)
            elif stat.S_ISLNK(st.st_mode):
                writer.symlink(rel, parts, os.readlink(e.path), st.st_mtime)
            elif stat.S_ISREG(st.st_mode):
                with open(e.path, "rb") as f:
                    writer.file(rel, parts, st.st_mode, st.st_mtime, f)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                raise writer.error(rel, "a device node; an image run rootless may not carry one")
            else:
                continue    # fifos and sockets: skipped, as in archives
            # a directory made rootless belongs to its maker: that is the image's root
            me = (os.getuid(), os.getgid())
            writer.own(parts, 0 if st.st_uid == me[0] else st.st_uid, 0 if st.st_gid == me[1] else st.st_gid)


# -- the cache -----------------------------------------------------------------


def _key(config: ImageConfig) -> str:
    parts = [config.digest.partition(":")[2][:16], config.os or "unknown", config.arch or "unknown"]
    if config.variant:
        parts.append(config.variant)
    return "-".join(_KEY_UNSAFE.sub("_", p) for p in parts)


def _cached(cache_dir: Path, config: ImageConfig, fill: Callable[[RootWriter], None]) -> UnpackedImage:
    """The cache entry for config, made by `fill` (writing its rootfs) under its lock unless complete."""
    base = cache_dir / "external"
    key = _key(config)
    final = base / key
    done = UnpackedImage(final / "rootfs", config)
    if (final / "complete").is_file():
        return done
    (base / "locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(base / "locks" / f"{key}.lock")):
        if (final / "complete").is_file():
            return done
        # Under the lock, another temp dir of this key is a killed run's ("+" is in no key).
        for stale in base.glob(f".tmp-{key}+*"):
            _rmtree(stale)
        tmp = base / f".tmp-{key}+{os.getpid()}x{secrets.token_hex(4)}"
        tmp.mkdir()
        try:
            (tmp / "rootfs").mkdir(mode=0o755)
            writer = RootWriter(tmp / "rootfs")
            fill(writer)
            writer.finish()
            write_owners(tmp, writer.owners)
            _write_atomic(tmp / "config.json", json.dumps(asdict(config), indent=1) + "\n")
            # Written last: an entry without it is never used.
            _write_atomic(tmp / "complete", config.digest + "\n")
            if os.path.lexists(final):
                _rmtree(final)
            os.rename(tmp, final)
        finally:
            if os.path.lexists(tmp):
                _rmtree(tmp)
    return done
