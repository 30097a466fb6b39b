"""Issue 15 end to end: the user's own image, from `docker save`, an OCI layout, or a directory,
runs in both engines with the image's USER, ENV and WORKDIR; platforms are selected and explained;
a hostile archive is refused (exit 2, naming the archive and the entry)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e

WHOAMI = FIXTURES / "whoami"
PASSWD = b"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"


def _matrix(images: str, targets: str = "[linux/amd64, linux/arm64]", args: str = "[]", expect: str = "") -> str:
    return f"""
        name: whoami
        project: {WHOAMI}
        targets: {targets}
        images: {images}
        run: {{args: {args}{', expect: {stdout: "' + expect + '"}' if expect else ''}}}
    """


# -- docker save --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_image(docker_daemon, tmp_path_factory) -> Path:
    """`docker save` of an image built FROM scratch with USER nonroot, WORKDIR /work and ENV GREETING."""
    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "etc").mkdir()
    (ctx / "etc" / "passwd").write_bytes(PASSWD)
    (ctx / "etc" / "group").write_text("root:x:0:\nnonroot:x:65532:\n")
    (ctx / "work").mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY etc /etc\nCOPY work /work\nUSER nonroot\nWORKDIR /work\n"
                                    "ENV GREETING=hello-from-the-image\n")
    tag = "xarch-test/whoami:e2e"
    subprocess.run(["docker", "build", "-q", "-t", tag, str(ctx)], check=True, capture_output=True, timeout=300,
                   env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"})
    out = ctx / "whoami.tar"
    subprocess.run(["docker", "save", tag, "-o", str(out)], check=True, capture_output=True, timeout=300)
    subprocess.run(["docker", "rmi", tag], capture_output=True, timeout=120)
    return out


WANT = "uid=65532 gid=65532 cwd=/work greeting=hello-from-the-image"


@pytest.mark.parametrize("engine", ["local", "docker-pool", "docker-container"])
def test_a_docker_save_archive_runs_with_the_images_user_env_and_workdir(xrun_matrix, saved_image, engine):
    extra, env = ((), None) if engine == "local" else (("--engine", "docker"),
                                                        {"XARCH_DOCKER_MODE": engine.split("-")[1]})
    r = xrun_matrix(_matrix(f'[{{name: runtime, from: "docker-archive:{saved_image}"}}]', expect=WANT),
                    *extra, env=env)
    c = r.cell("linux/amd64:runtime:baseline")
    assert c["verdict"] == "ok", c
    assert c["stdout"].strip() == WANT and c["evidence"]["user"] == "uid 65532 (the image's USER nonroot)"
    # a single-platform image makes cells for its own platform only, and the plan says so
    assert [x["id"] for x in r.report["cells"]] == ["linux/amd64:runtime:baseline"]
    assert any(n.startswith("linux/arm64 x runtime: left out, the image offers only linux/amd64")
               for n in r.report["plan_notes"]), r.report.get("plan_notes")
    assert "plan: linux/arm64 x runtime: left out" in r.out
    assert r.report["images"]["runtime"] == {"exact": True, "from": f"docker-archive:{saved_image}"}


def test_writing_the_workdir_as_the_images_user_is_explained(xrun_matrix, saved_image):
    r = xrun_matrix(_matrix(f'[{{name: runtime, from: "docker-archive:{saved_image}"}}]', "[linux/amd64]",
                            "[write]"))
    c = r.cell("linux/amd64:runtime:baseline")
    assert c["verdict"] == "exit-status", c
    assert "read-only file system" in c["explanation"]
    assert "It ran as uid 65532 (the image's USER nonroot)" in c["explanation"]
    assert "COPY --chown=65532:65532" in c["fix"] and "/tmp" in c["fix"]


# -- an OCI layout written here ------------------------------------------------------------------------

def _tar(entries: list[tuple[str, bytes | None]]) -> bytes:
    """A layer: (name, content) files; content None makes a directory."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


class _Layout:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')

    def blob(self, data: bytes, media: str) -> dict:
        h = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / h).write_bytes(data)
        return {"mediaType": media, "digest": f"sha256:{h}", "size": len(data)}

    def image(self, arch: str, variant: str | None, layers: list[bytes], env: list[str]) -> dict:
        cfg = {"architecture": arch, "os": "linux", **({"variant": variant} if variant else {}),
               "config": {"Env": env}, "rootfs": {"type": "layers",
                                                  "diff_ids": [f"sha256:{hashlib.sha256(x).hexdigest()}" for x in layers]}}
        man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": self.blob(json.dumps(cfg).encode(), "application/vnd.oci.image.config.v1+json"),
               "layers": [self.blob(x, "application/vnd.oci.image.layer.v1.tar") for x in layers]}
        d = self.blob(json.dumps(man).encode(), "application/vnd.oci.image.manifest.v1+json")
        return {**d, "platform": {"os": "linux", "architecture": arch, **({"variant": variant} if variant else {})}}

    def index(self, manifests: list[dict]) -> None:
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        top = self.blob(json.dumps(idx).encode(), "application/vnd.oci.image.index.v1+json")
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))


def test_a_multi_platform_oci_layout_with_a_whiteout_gives_each_cell_its_platforms_layers(xrun_matrix, tmp_path):
    lay = _Layout(tmp_path / "oci")
    base = _tar([("etc/", None), ("etc/passwd", PASSWD), ("etc/gone", b"x"), ("etc/kept", b"y"),
                 ("opaque/", None), ("opaque/old", b"z")])
    top = _tar([("etc/.wh.gone", b""), ("opaque/", None), ("opaque/.wh..wh..opq", b""), ("opaque/new", b"n")])
    lay.index([lay.image("amd64", None, [base, top], ["GREETING=amd64-manifest"]),
               lay.image("arm64", "v8", [base, top], ["GREETING=arm64-manifest"])])
    r = xrun_matrix(_matrix(f'[{{name: multi, from: "oci:{tmp_path / "oci"}"}}]',
                            "[linux/amd64, linux/arm64, linux/riscv64]",
                            "[stat, /etc/gone, /etc/kept, /opaque/old, /opaque/new]"))
    for arch in ("amd64", "arm64"):
        c = r.cell(f"linux/{arch}:multi:baseline")
        assert c["verdict"] == "ok", c
        assert f"greeting={arch}-manifest" in c["stdout"]
        assert "/etc/gone missing\n/etc/kept exists\n/opaque/old missing\n/opaque/new exists" in c["stdout"], c
        assert "uid=0" in c["stdout"] and "evidence" in c and not c["evidence"].get("user")
    assert not any(x["id"].startswith("linux/riscv64") for x in r.report["cells"])
    assert any("linux/riscv64 x multi: left out, the image offers only linux/amd64, linux/arm64/v8" in n
               for n in r.report["plan_notes"]), r.report["plan_notes"]


def test_a_root_filesystem_directory_runs_for_every_target(xrun_matrix, tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_bytes(PASSWD)
    r = xrun_matrix(_matrix(f'[{{name: mydir, from: "dir:{root}"}}]', args="[stat, /etc/passwd]"))
    for t in ("linux/amd64", "linux/arm64"):
        c = r.cell(f"{t}:mydir:baseline")
        assert c["verdict"] == "ok" and "/etc/passwd exists" in c["stdout"], c


@pytest.mark.parametrize(("entry", "kind"), [("../evil", "file"), ("/abs/path", "file"), ("dev/null", "chr")])
def test_a_hostile_archive_is_refused_naming_the_archive_and_the_entry(xrun_matrix, tmp_path, entry, kind):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo(entry)
        if kind == "chr":
            ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
            tf.addfile(ti)
        else:
            ti.size = 1
            tf.addfile(ti, io.BytesIO(b"x"))
    bad = tmp_path / "bad.tar"
    bad.write_bytes(buf.getvalue())
    r = xrun_matrix(_matrix(f'[{{name: bad, from: "tar:{bad}"}}]', "[linux/amd64]"))
    assert r.rc == 2, (r.rc, r.out, r.err)
    assert str(bad) in r.err and entry.strip("/").split("/")[-1] in r.err and "Traceback" not in r.err, r.err
