"""`docker:REF` images (contract §7): an image in the local docker daemon, read as a `docker save`.

The image is saved once per image id into the cache (so both engines read the same layers the same
way: rootfs/external.py unpacks it). An image the daemon lacks is pulled for the cell's platform when
a registry is reachable; otherwise the error says how to get it there (`docker load`, `docker build`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from filelock import FileLock

from .. import install, paths
from ..errors import InfraError

__all__ = ["platforms", "saved"]

_FIX = f"start the docker daemon (`sudo dockerd &`), or install it: `{install.DOCKER}`"


def _client() -> Any:
    try:
        import docker

        c = docker.from_env(timeout=120)
        c.ping()
        return c
    except Exception as e:  # the SDK raises many kinds; all mean "no daemon here"
        raise InfraError(f"docker: images need a reachable docker daemon ({str(e)[:200]})", _FIX) from None


def _image(client: Any, ref: str, platform: str | None) -> Any:
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        pass
    try:
        return client.images.pull(ref, platform=platform)
    except docker.errors.DockerException as e:
        raise InfraError(f"docker: image {ref} is not in the daemon and could not be pulled for "
                         f"{platform or 'this platform'} ({str(e)[:200]})",
                         f"put it there first: `docker load -i IMAGE.tar` or `docker build -t {ref} .`") from None


def platforms(ref: str) -> list[tuple[str, str, str | None]]:
    """The platform of the daemon's image (one: the classic store keeps one per tag); [] if unknown."""
    try:
        img = _image(_client(), ref, None)
    except InfraError:
        return []
    a = img.attrs
    if not a.get("Os") or not a.get("Architecture"):
        return []
    return [(str(a["Os"]), str(a["Architecture"]), a.get("Variant") or None)]


def saved(ref: str, os_: str, arch: str, variant: str | None) -> Path:
    """A `docker save` tar of the daemon's image for that platform, cached by image id."""
    platform = "/".join(x for x in (os_, arch, variant) if x)
    img = _image(_client(), ref, platform)
    out_dir = paths.cache_dir() / "docker-save"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{img.id.replace(':', '-')}.tar"
    with FileLock(str(out_dir / f"{out.name}.lock")):
        if not out.is_file():
            tmp = out.with_name(f".{out.name}.{os.getpid()}")
            with open(tmp, "wb") as f:
                for chunk in img.save(named=False):
                    f.write(chunk)
            os.replace(tmp, out)
    return out
