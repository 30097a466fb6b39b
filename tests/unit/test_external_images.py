"""Images users bring (docker save, OCI layouts, bare rootfs) unpack per platform, safely, once."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from xarch.errors import ConfigError
from xarch.rootfs import external
from xarch.rootfs.external import ImageSourceError, parse_source, platforms_of, unpack

Entry = tuple[tarfile.TarInfo, bytes | None]
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MTIME = 1_600_000_000


def _info(name: str, kind: bytes = tarfile.REGTYPE, mode: int = 0o644, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.linkname, ti.mtime = kind, mode, link, MTIME
    return ti


def f(name: str, data: bytes = b"x", mode: int = 0o644) -> Entry:
    return _info(name, mode=mode), data


def d(name: str, mode: int = 0o755) -> Entry:
    return _info(name, tarfile.DIRTYPE, mode), None


def sym(name: str, target: str) -> Entry:
    return _info(name, tarfile.SYMTYPE, 0o777, target), None


def hard(name: str, target: str) -> Entry:
    return _info(name, tarfile.LNKTYPE, 0o644, target), None


def tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, data in entries:
            if data is not None:
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def sha(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def config(arch: str = "amd64", variant: str | None = None, layers: Sequence[bytes] = (), **cfg: Any) -> bytes:
    doc = {"os": "linux", "architecture": arch, "config": cfg,
           "rootfs": {"type": "layers", "diff_ids": [sha(gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b)
                                                      for b in layers]}}
    if variant:
        doc["variant"] = variant
    return json.dumps(doc).encode()


class Oci:
    """An OCI image layout written blob by blob."""

    def __init__(self, path: Path) -> None:
        self.path = path
        (path / "blobs" / "sha256").mkdir(parents=True)
        (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes) -> dict[str, Any]:
        (self.path / "blobs" / "sha256" / sha(data)[7:]).write_bytes(data)
        return {"digest": sha(data), "size": len(data)}

    def image(self, layers: list[bytes], arch: str = "amd64", variant: str | None = None,
              **cfg: Any) -> dict[str, Any]:
        """The manifest's descriptor (with its platform)."""
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": self.blob(config(arch, variant, layers, **cfg)),
                    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar"
                                + ("+gzip" if b[:2] == b"\x1f\x8b" else ""), **self.blob(b)} for b in layers]}
        platform = {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}
        return {"mediaType": OCI_MANIFEST, **self.blob(json.dumps(manifest).encode()), "platform": platform}

    def index(self, *descriptors: dict[str, Any], nested: bool = False) -> Path:
        doc = {"schemaVersion": 2, "manifests": list(descriptors)}
        if nested:
            doc = {"schemaVersion": 2, "manifests": [
                {"mediaType": OCI_INDEX, **self.blob(json.dumps(doc).encode())}]}
        (self.path / "index.json").write_text(json.dumps(doc))
        return self.path


def tar_dir(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w") as t:
        for p in sorted(src.rglob("*")):
            t.add(p, p.relative_to(src).as_posix(), recursive=False)
    return dest


def amd64(kind: str, location: Path, cache: Path, variant: str | None = None) -> external.UnpackedImage:
    return unpack(kind, location, os_="linux", arch="amd64", variant=variant, cache_dir=cache)


def two_layers(tmp_path: Path) -> Path:
    oci = Oci(tmp_path / "layout")
    l1 = tar(d("etc"), f("etc/keep", b"k"), f("etc/gone", b"g"), d("opt"), d("opt/d"),
             f("opt/d/old"), d("opt/d/sub"), f("opt/d/sub/old2"))
    l2 = gzip.compress(tar(f("opt/d/sub/new2"), f("etc/.wh.gone", b""), d("opt/d"),
                           f("opt/d/.wh..wh..opq", b""), f("opt/d/new", b"n")))
    return oci.index({k: v for k, v in oci.image([l1, l2], User="65532").items() if k != "platform"})


def all_names(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def test_parse_source_knows_the_kinds() -> None:
    assert parse_source("docker-archive:images/x.tar") == ("docker-archive", "images/x.tar")
    assert parse_source("docker:alpine:3.19") == ("docker", "alpine:3.19")
    assert parse_source("oci:/tmp/a") == ("oci", "/tmp/a")
    for bad in ("podman:x", "images/x.tar", "tar:"):
        with pytest.raises(ImageSourceError):
            parse_source(bad)
    assert issubclass(ImageSourceError, ConfigError) and ImageSourceError.exit_code == 2


def test_docker_images_are_the_daemons_business(tmp_path: Path) -> None:
    with pytest.raises(ImageSourceError, match="docker daemon"):
        platforms_of("docker", Path("alpine"))
    with pytest.raises(ImageSourceError, match="docker daemon"):
        amd64("docker", Path("alpine"), tmp_path)


def test_legacy_docker_save_with_user_workdir_env(tmp_path: Path) -> None:
    layer = gzip.compress(tar(d("app"), f("app/run", b"#!", 0o755), sym("usr/lib/libc.so", "/lib/libc.so.6")))
    cfg = config("arm64", "v8", [layer], User="65532:65532", WorkingDir="/app", Env=["PATH=/bin", "A=b=c"])
    archive = tmp_path / "img.tar"
    archive.write_bytes(tar(f(f"{sha(cfg)[7:]}.json", cfg), f("abc/layer.tar", layer), f("manifest.json", json.dumps(
        [{"Config": f"{sha(cfg)[7:]}.json", "RepoTags": ["x:1"], "Layers": ["abc/layer.tar"]}]).encode())))
    assert platforms_of("docker-archive", archive) == [("linux", "arm64", "v8")]
    img = unpack("docker-archive", archive, os_="linux", arch="arm64", variant=None, cache_dir=tmp_path / "c")
    c = img.config
    assert (c.user, c.workdir, c.env) == ("65532:65532", "/app", (("PATH", "/bin"), ("A", "b=c")))
    assert (c.os, c.arch, c.variant, c.digest) == ("linux", "arm64", "v8", sha(cfg))
    assert (img.root / "app" / "run").read_bytes() == b"#!"
    assert os.readlink(img.root / "usr/lib/libc.so") == "/lib/libc.so.6"  # absolute targets are normal
    assert img.root.parent.name == f"{sha(cfg)[7:23]}-linux-arm64-v8"
    assert json.loads((img.root.parent / "config.json").read_text())["user"] == "65532:65532"


def test_oci_layers_apply_whiteouts_and_opaque_dirs(tmp_path: Path) -> None:
    img = amd64("oci", two_layers(tmp_path), tmp_path / "c")
    assert all_names(img.root) == {"etc", "etc/keep", "opt", "opt/d", "opt/d/new", "opt/d/sub",
                                   "opt/d/sub/new2"}
    assert img.config.user == "65532" and img.config.env == () and img.config.workdir is None
    index = json.loads((tmp_path / "layout" / "index.json").read_text())
    assert img.config.digest == index["manifests"][0]["digest"]
    assert platforms_of("oci", tmp_path / "layout") == [("linux", "amd64", None)]


def test_oci_archive_is_a_tar_of_a_layout(tmp_path: Path) -> None:
    archive = tar_dir(two_layers(tmp_path), tmp_path / "img.oci.tar")
    img = amd64("oci-archive", archive, tmp_path / "c")
    assert (img.root / "opt/d/new").read_bytes() == b"n"
    assert not (img.root / "etc/gone").exists()


def test_a_docker_25_save_is_read_through_its_oci_layout(tmp_path: Path) -> None:
    layout = two_layers(tmp_path)
    (layout / "manifest.json").write_text("[]")  # its legacy manifest is not needed
    img = amd64("docker-archive", tar_dir(layout, tmp_path / "img.tar"), tmp_path / "c")
    assert (img.root / "etc/keep").read_bytes() == b"k"


def test_a_multi_platform_index_gives_each_platform_its_root(tmp_path: Path) -> None:
    oci = Oci(tmp_path / "layout")
    layout = oci.index(oci.image([tar(f("which", b"arm64"))], "arm64"),
                       oci.image([tar(f("which", b"amd64"))], "amd64"),
                       {"mediaType": OCI_MANIFEST, **oci.blob(b"{}"),
                        "platform": {"os": "unknown", "architecture": "unknown"}}, nested=True)
    assert platforms_of("oci", layout) == [("linux", "arm64", None), ("linux", "amd64", None)]
    cache = tmp_path / "c"
    a = unpack("oci", layout, os_="linux", arch="arm64", variant="v8", cache_dir=cache)
    b = amd64("oci", layout, cache)
    assert a.root != b.root
    assert ((a.root / "which").read_bytes(), (b.root / "which").read_bytes()) == (b"arm64", b"amd64")
    with pytest.raises(ImageSourceError, match="offers linux/amd64, linux/arm64, not linux/riscv64"):
        unpack("oci", layout, os_="linux", arch="riscv64", variant=None, cache_dir=cache)


def test_variants_match_exactly_or_fall_back_only_unambiguously(tmp_path: Path) -> None:
    oci = Oci(tmp_path / "layout")
    layout = oci.index(oci.image([tar(f("v7"))], "arm", "v7"), oci.image([tar(f("v6"))], "arm", "v6"))

    def arm(variant: str | None) -> external.UnpackedImage:
        return unpack("oci", layout, os_="linux", arch="arm", variant=variant, cache_dir=tmp_path / "c")

    assert (arm("v6").root / "v6").exists() and (arm("v7").root / "v7").exists()
    for variant in (None, "v5"):
        with pytest.raises(ImageSourceError, match="linux/arm/v6, linux/arm/v7"):
            arm(variant)


def test_dir_and_tar_rootfs(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "bin").mkdir(parents=True)
    (src / "bin" / "sh").write_bytes(b"elf")
    (src / "bin" / "sh").chmod(0o755)
    (src / "lib").symlink_to("/usr/lib")
    cache = tmp_path / "c"
    img = amd64("dir", src, cache)
    assert (img.root / "bin/sh").read_bytes() == b"elf" and os.readlink(img.root / "lib") == "/usr/lib"
    assert stat.S_IMODE((img.root / "bin/sh").stat().st_mode) == 0o755
    assert img.config.user is None and img.config.env == () and img.config.digest.startswith("sha256:")
    assert amd64("dir", src, cache).config.digest == img.config.digest
    (src / "bin" / "sh").write_bytes(b"elf2")
    assert amd64("dir", src, cache).config.digest != img.config.digest
    assert platforms_of("dir", src) == []

    tarball = tmp_path / "rootfs.tar.gz"
    tarball.write_bytes(gzip.compress(tar(d("bin"), f("bin/sh", b"elf"), f(".wh.kept", b"w"))))
    t = amd64("tar", tarball, cache)
    assert (t.root / "bin/sh").read_bytes() == b"elf"
    assert (t.root / ".wh.kept").exists()  # a plain rootfs tarball has no layers to white out
    assert t.config.digest == sha(tarball.read_bytes())


@pytest.mark.parametrize(("entries", "named"), [
    ((f("../evil"),), "../evil"),
    ((f("/abs/path"),), "/abs/path"),
    ((f("ok/../../evil"),), "ok/../../evil"),
    ((d("a"), sym("a/up", "../../.."), f("a/up/x")), "a/up"),
    ((sym("b", "/etc"), f("b/x")), "b/x"),
    ((sym("c", "."), f("c/x")), "c/x"),
    (((_info("dev/null", tarfile.CHRTYPE, 0o666), None),), "dev/null"),
    (((_info("dev/sda", tarfile.BLKTYPE, 0o660), None),), "dev/sda"),
    ((hard("h", "../../../etc/passwd"),), "h"),
    ((hard("h", "/etc/passwd"),), "h"),
    ((hard("h", "etc/passwd"),), "h"),
], ids=["dotdot", "absolute", "inner-dotdot", "symlink-climbs", "through-symlink", "through-dot-link",
        "char-device", "block-device", "hardlink-out", "hardlink-absolute", "hardlink-not-extracted"])
def test_hostile_entries_are_refused_naming_archive_and_entry(
        tmp_path: Path, entries: tuple[Entry, ...], named: str) -> None:
    tarball = tmp_path / "hostile.tar"
    tarball.write_bytes(tar(*entries))
    with pytest.raises(ImageSourceError) as err:
        amd64("tar", tarball, tmp_path / "c")
    assert f"{tarball}: {named}: " in str(err.value)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "c" / "evil").exists()
    assert not list((tmp_path / "c" / "external").glob("*/complete"))


def test_a_hostile_layer_is_named_by_archive_and_layer(tmp_path: Path) -> None:
    oci = Oci(tmp_path / "layout")
    layout = oci.index(oci.image([tar(f("ok")), tar(d("x"), f("x/.wh..."))]))
    with pytest.raises(ImageSourceError, match=r"layout:blobs/sha256/[0-9a-f]{64}: x/\.wh\.\.\.: "):
        amd64("oci", layout, tmp_path / "c")


def test_a_blob_that_does_not_match_its_digest_is_refused(tmp_path: Path) -> None:
    oci = Oci(tmp_path / "layout")
    layer = tar(f("a", b"original"))
    layout = oci.index(oci.image([layer]))
    (layout / "blobs" / "sha256" / sha(layer)[7:]).write_bytes(tar(f("a", b"altered!")))
    with pytest.raises(ImageSourceError, match=f"{sha(layer)}.*corrupt or was altered"):
        amd64("oci", layout, tmp_path / "c")


def test_zstd_layers_need_zstandard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(external.importlib, "import_module", _no_module)
    tarball = tmp_path / "rootfs.tar.zst"
    tarball.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    with pytest.raises(ImageSourceError, match="zstandard"):
        amd64("tar", tarball, tmp_path / "c")


def _no_module(name: str) -> Any:
    raise ImportError(name)


def test_the_cache_is_reused_without_unpacking_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = two_layers(tmp_path)
    first = amd64("oci", layout, tmp_path / "c")
    marker = first.root.parent / "complete"
    stamp = marker.stat().st_mtime_ns

    def fail(*_args: Any) -> None:
        raise AssertionError("unpacked again")

    monkeypatch.setattr(external, "_apply_layers", fail)
    second = amd64("oci", layout, tmp_path / "c")
    assert second.root == first.root and marker.stat().st_mtime_ns == stamp
    assert (tmp_path / "c" / "external" / "locks" / f"{first.root.parent.name}.lock").exists()
    assert sorted(p.name for p in (tmp_path / "c" / "external").iterdir()) == sorted(["locks", first.root.parent.name])


def test_setid_bits_are_stripped_and_modes_mtimes_kept(tmp_path: Path) -> None:
    tarball = tmp_path / "rootfs.tar"
    tarball.write_bytes(tar(d("bin", 0o2775), f("bin/su", b"su", 0o4755), f("bin/ro", b"r", 0o444),
                            d("sealed", 0o555), f("sealed/f"), hard("bin/su2", "bin/su")))
    root = amd64("tar", tarball, tmp_path / "c").root
    modes = {n: stat.S_IMODE((root / n).lstat().st_mode) for n in ("bin", "bin/su", "bin/ro", "sealed")}
    assert modes == {"bin": 0o775, "bin/su": 0o755, "bin/ro": 0o444, "sealed": 0o555}
    assert (root / "bin/su").stat().st_mtime == MTIME and (root / "bin").stat().st_mtime == MTIME
    assert (root / "bin/su2").stat().st_ino == (root / "bin/su").stat().st_ino


def test_ownership_is_recorded_not_applied_and_follows_the_last_layer(tmp_path: Path) -> None:
    """owners.json holds what the layers say (the docker engine applies it); the files stay ours."""
    def owned(e: Entry, uid: int, gid: int) -> Entry:
        e[0].uid, e[0].gid = uid, gid
        return e

    oci = Oci(tmp_path / "layout")
    l1 = tar(owned(d("app"), 65532, 65532), owned(f("app/data"), 65532, 65532), owned(f("etc-file"), 0, 0),
             owned(f("later-root"), 1000, 1000))
    l2 = tar(owned(f("later-root", b"again"), 0, 0))
    img = amd64("oci", oci.index(oci.image([l1, l2])), tmp_path / "c")
    from xarch.rootfs.owners import owners_of
    assert owners_of(img.root) == {"app": (65532, 65532), "app/data": (65532, 65532)}
    assert (img.root / "app" / "data").stat().st_uid == os.getuid()
