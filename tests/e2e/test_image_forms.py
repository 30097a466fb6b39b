"""Issue 15, the rest: distroless's `:nonroot` form of the rebuilt images, an image's own /app (a
Dockerfile's `WORKDIR /app`), the image's file ownership in the docker engine, and `docker:REF`
images run as they are, in both engines."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e

WHOAMI = FIXTURES / "whoami"
ENGINES = [("local", None), ("docker-pool", "pool"), ("docker-container", "container")]


def _args(engine: str) -> tuple[tuple[str, ...], dict[str, str] | None]:
    mode = dict(ENGINES)[engine]
    return ((), None) if mode is None else (("--engine", "docker"), {"XARCH_DOCKER_MODE": mode})


def _matrix(images: str, args: str, targets: str = "[linux/arm64]") -> str:
    return f"""
        name: forms
        project: {WHOAMI}
        targets: {targets}
        images: {images}
        run: {{args: {args}}}
    """


@pytest.mark.parametrize("engine", [e for e, _ in ENGINES])
def test_the_nonroot_form_runs_as_65532_in_its_home(xrun_matrix, engine):
    extra, env = _args(engine)
    r = xrun_matrix(_matrix("[distroless-static, distroless-static:nonroot]", "[owner, /home/nonroot]"),
                    *extra, env=env)
    c = r.cell("linux/arm64:distroless-static:nonroot:baseline")
    assert c["verdict"] == "ok", c
    out = c["stdout"].splitlines()
    assert out[0] == "uid=65532 gid=65532 cwd=/home/nonroot greeting=", out
    # the directory is the user's in both engines (docker: from the layer; local: the cell owns its files)
    assert out[1] == "/home/nonroot 65532:65532", out
    assert c["evidence"]["user"] == "uid 65532 (the image's USER 65532:65532)"
    plain = r.cell("linux/arm64:distroless-static:baseline")
    assert plain["stdout"].splitlines()[0] == "uid=0 gid=0 cwd=/ greeting=", plain
    form = r.report["images"]["distroless-static:nonroot"]
    assert form["reference"] == "gcr.io/distroless/static-debian12:nonroot"
    assert form["form"] == {"user": "65532:65532", "workdir": "/home/nonroot"}


def test_the_nonroot_form_cannot_write_its_home_read_only_root_explained(xrun_matrix):
    r = xrun_matrix(_matrix("[distroless-static:nonroot]", "[write]"))
    c = r.cell("linux/arm64:distroless-static:nonroot:baseline")
    assert c["verdict"] == "exit-status", c
    assert "It ran as uid 65532 (the image's USER 65532:65532)" in c["explanation"]


def test_the_docker_engine_applies_the_rebuilt_images_ownership(xrun_matrix):
    r = xrun_matrix(_matrix("[distroless-static]", "[owner, /home/nonroot, /etc/passwd]"), "--engine", "docker")
    c = r.cell("linux/arm64:distroless-static:baseline")
    assert c["verdict"] == "ok", c
    assert c["stdout"].splitlines()[1:] == ["/home/nonroot 65532:65532", "/etc/passwd 0:0"], c["stdout"]


def _build_app_image(ctx: Path, tag: str, extra: str = "") -> None:
    """An arm64 image FROM scratch whose WORKDIR is /app, with a file `COPY --chown`ed to 65532
    (DOCKER_BUILDKIT=0, no RUN: nothing executes, nothing is pulled)."""
    (ctx / "etc").mkdir()
    (ctx / "etc" / "passwd").write_text("root:x:0:0:root:/root:/sbin/nologin\n"
                                        "app:x:65532:65532:app:/app:/sbin/nologin\n")
    (ctx / "data.txt").write_text("payload\n")
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY etc /etc\nWORKDIR /app\n"
                                    f"COPY --chown=65532:65532 data.txt /app/data.txt\nUSER app\n{extra}")
    subprocess.run(["docker", "build", "-q", "--platform", "linux/arm64", "-t", tag, str(ctx)], check=True,
                   capture_output=True, timeout=300, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"})


@pytest.fixture(scope="module")
def app_image(docker_daemon, tmp_path_factory) -> str:
    """The /app image, kept in the daemon for `docker:REF`."""
    tag = "xarch-test/appdir:e2e"
    _build_app_image(tmp_path_factory.mktemp("appctx"), tag)
    yield tag
    subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


@pytest.mark.parametrize("engine", [e for e, _ in ENGINES])
def test_a_daemon_image_with_its_own_app_dir_runs_as_it_is(xrun_matrix, app_image, engine):
    extra, env = _args(engine)
    r = xrun_matrix(_matrix(f'[{{name: appdir, from: "docker:{app_image}"}}]', "[owner, /app/data.txt]"),
                    *extra, env=env)
    c = r.cell("linux/arm64:appdir:baseline")
    assert c["verdict"] == "ok", c
    out = c["stdout"].splitlines()
    assert out[0] == "uid=65532 gid=65532 cwd=/app greeting=", out
    assert out[1] == "/app/data.txt 65532:65532", out     # the image's /app is there, not hidden by the artifact
    if engine != "local":
        # used as it is: the daemon's image id, not a re-import
        assert c["evidence"]["docker_image"].startswith("sha256:"), c["evidence"]


def test_a_saved_archive_keeps_its_ownership_in_the_docker_engine(xrun_matrix, docker_daemon, tmp_path):
    """The image is saved and removed from the daemon: the docker engine loads it from the archive,
    with the archive's owners (rootfs/owners.py), not the cache's."""
    tag, out = "xarch-test/appdir-saved:e2e", tmp_path / "appdir.tar"
    (tmp_path / "ctx").mkdir()
    _build_app_image(tmp_path / "ctx", tag, "ENV SAVED=1\n")     # an image id of its own
    subprocess.run(["docker", "save", tag, "-o", str(out)], check=True, capture_output=True, timeout=300)
    subprocess.run(["docker", "rmi", "-f", tag], check=True, capture_output=True, timeout=120)
    r = xrun_matrix(_matrix(f'[{{name: appdir, from: "docker-archive:{out}"}}]', "[owner, /app/data.txt, /etc/passwd]"),
                    "--engine", "docker", env={"XARCH_DOCKER_MODE": "container"})
    c = r.cell("linux/arm64:appdir:baseline")
    assert c["verdict"] == "ok", c
    assert c["stdout"].splitlines()[1:] == ["/app/data.txt 65532:65532", "/etc/passwd 0:0"], c["stdout"]
    assert c["evidence"]["docker_image"].startswith("xarch/appdir:"), c["evidence"]
