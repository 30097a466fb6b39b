"""Real runtime images: every arch in every image, scratch semantics, loaders and libraries."""

from __future__ import annotations

import pytest

from conftest import FIXTURES

pytestmark = pytest.mark.e2e

IMAGES = ["scratch", "alpine", "distroless-static", "distroless-base", "distroless-cc"]
TARGETS = ["linux/amd64", "linux/386", "linux/arm/v5", "linux/arm/v6", "linux/arm/v7", "linux/arm64",
           "linux/ppc64le", "linux/s390x", "linux/riscv64", "linux/mips64le"]

# What the files probe sees in each image: a user entry, a CA bundle, zoneinfo.
EXPECTED_FILES = {
    "scratch": ("user ERR", "certs ERR", "tz ERR"),
    "alpine": ("user ok root", "certs ok", "tz ERR"),
    "distroless-static": ("user ok root", "certs ok", "tz ok"),
    "distroless-base": ("user ok root", "certs ok", "tz ok"),
    "distroless-cc": ("user ok root", "certs ok", "tz ok"),
}


def test_static_binary_runs_in_every_image_for_every_arch(xrun_matrix):
    r = xrun_matrix(f"""
        name: probe
        targets: [{", ".join(TARGETS)}]
        images: [{", ".join(IMAGES)}]
        run: {{args: [files], timeout: 120}}
    """)
    assert r.rc == 0, r.out[-3000:] + r.err[-2000:]
    assert len(r.report["cells"]) == len(TARGETS) * len(IMAGES)
    for c in r.report["cells"]:
        assert c["verdict"] == "ok", c
        for needle in EXPECTED_FILES[c["image"]]:
            assert needle in c["stdout"], (c["id"], c["stdout"])
        assert "hosts ok" in c["stdout"] and "hostname xarch" in c["stdout"]
    imgs = r.report["images"]
    assert imgs["alpine"]["exact"] is False and "rebuilt equivalent" in imgs["alpine"]["fidelity"]


@pytest.mark.parametrize(("mode", "needle"), [("tz", "timetzdata"), ("user", "/etc/passwd")])
def test_missing_file_keeps_the_verdict_and_names_the_fix(xrun_matrix, mode, needle):
    r = xrun_matrix(f"""
        name: probe
        targets: [linux/arm64]
        images: [scratch, distroless-static]
        run: {{args: [{mode}]}}
    """)
    bad = r.cell("linux/arm64:scratch:baseline")
    assert bad["verdict"] == "exit-status" and needle in bad["fix"]
    assert r.cell("linux/arm64:distroless-static:baseline")["verdict"] == "ok"


def test_cgo_glibc_binary_needs_a_glibc_image(xrun_matrix):
    r = xrun_matrix("""
        name: probe
        targets:
          - {target: linux/amd64, env: {CGO_ENABLED: "1"}}
        images: [scratch, alpine, distroless-static, distroless-base]
        profiles: [baseline, host]
        run: {args: [hello]}
    """)
    for prof in ("baseline", "host"):
        assert r.cell(f"linux/amd64:distroless-base:{prof}")["verdict"] == "ok"
        for img in ("scratch", "alpine", "distroless-static"):
            c = r.cell(f"linux/amd64:{img}:{prof}")
            assert c["verdict"] == "missing-loader", c
            assert "distroless-base" in c["fix"]


def test_missing_shared_library_from_a_real_binary(xrun_matrix):
    # cgo with a C++ file: the binary needs libstdc++.so.6, which only distroless-cc has
    r = xrun_matrix("""
        name: cgocxx
        targets:
          - {target: linux/amd64, env: {CGO_ENABLED: "1"}}
        images: [distroless-base, distroless-cc]
        run: {args: [], expect: {stdout: "^answer 42$"}}
    """, project=FIXTURES / "cgocxx")
    c = r.cell("linux/amd64:distroless-base:baseline")
    assert c["verdict"] == "missing-library", c
    assert "libstdc++.so.6" in c["explanation"] and c["exit_code"] == 127
    assert "distroless-cc has it" in c["fix"]
    assert r.cell("linux/amd64:distroless-cc:baseline")["verdict"] == "ok"
