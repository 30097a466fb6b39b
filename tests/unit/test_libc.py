"""The C library at symbol level (issue 13 item 5): symbol version needs read from a real ELF, the
image's C library read from its files, and the missing-library verdicts built from them."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_classify import cell, ev, facts, verdict

from xarch.forensics import libc

HOST_LIBC = Path("/lib/x86_64-linux-gnu/libc.so.6")


@pytest.fixture(scope="module")
def arc4random_elf(tmp_path_factory) -> Path:
    """A host-built dynamic ELF importing arc4random (glibc 2.36) and puts (glibc 2.2.5)."""
    if shutil.which("gcc") is None:
        pytest.skip("needs the host C compiler: apt-get install gcc libc6-dev (scripts/setup installs it)")
    d = tmp_path_factory.mktemp("elf")
    (d / "t.c").write_text('#include <stdlib.h>\n#include <stdio.h>\n'
                           'int main(void){printf("%u\\n", arc4random()); return 0;}\n')
    subprocess.run(["gcc", "-O0", "-o", str(d / "t"), str(d / "t.c")], check=True, capture_output=True)
    return d / "t"


def test_versioned_imports_bind_undefined_symbols_to_their_version_needs(arc4random_elf):
    imports = dict(libc.versioned_imports(arc4random_elf))
    assert imports["arc4random"] == "GLIBC_2.36"
    assert imports["printf"] == "GLIBC_2.2.5"
    assert libc.needing(arc4random_elf, above=(2, 35)) == [("arc4random", "GLIBC_2.36")]
    assert libc.needing(arc4random_elf, missing=("GLIBC_2.2.5",)) == [
        (s, v) for s, v in libc.versioned_imports(arc4random_elf) if v == "GLIBC_2.2.5"]
    assert libc.needing(arc4random_elf, above=(2, 36)) == []


def test_versioned_imports_of_a_file_that_is_not_elf_are_empty(tmp_path):
    (tmp_path / "x").write_bytes(b"#!/bin/sh\necho hi\n")
    assert libc.versioned_imports(tmp_path / "x") == ()
    assert libc.versioned_imports(tmp_path / "absent") == ()


def test_image_libc_reads_the_glibc_version_its_libc_so_6_defines(tmp_path):
    if not HOST_LIBC.is_file():
        pytest.skip("needs an amd64 Debian host's libc.so.6")
    root = tmp_path / "root"
    (root / "usr/lib/x86_64-linux-gnu").mkdir(parents=True)
    shutil.copy(HOST_LIBC, root / "usr/lib/x86_64-linux-gnu/libc.so.6")
    os.symlink("usr/lib", root / "lib")
    fn = ctypes.CDLL("libc.so.6").gnu_get_libc_version
    fn.restype = ctypes.c_char_p
    assert libc.image_libc(root) == f"glibc {fn().decode()}"


def test_image_libc_never_follows_a_link_out_of_the_image(tmp_path):
    root = tmp_path / "root"
    (root / "lib").mkdir(parents=True)
    # absolute, as a guest would read it: /lib/x86_64-linux-gnu/libc.so.6 inside the image, which is absent
    os.symlink(str(HOST_LIBC), root / "lib" / "libc.so.6")
    os.symlink("../../../../../../../../etc", root / "lib" / "x86_64-linux-gnu")
    assert libc.image_libc(root) is None


def test_image_libc_reads_musls_version_string(tmp_path):
    root = tmp_path / "root"
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/ld-musl-x86_64.so.1").write_bytes(b"\x7fELF" + b"\0" * 64 + b"=1.2.4\x00rest")
    os.symlink("usr/lib", root / "lib")
    assert libc.image_libc(root) == "musl 1.2.4"
    (root / "usr/lib/ld-musl-x86_64.so.1").write_bytes(b"\x7fELF no version here")
    libc.image_libc.cache_clear()
    assert libc.image_libc(root) == "musl"
    assert libc.image_libc(tmp_path) is None


_GLIBC_ERR = "/app: /lib/aarch64-linux-gnu/libc.so.6: version `GLIBC_2.38' not found (required by /app)\n"


def _run(image: str, stderr: str, **kw):
    c = cell("linux/arm64", "cortex-a53", "baseline", image=image)
    f = facts("arm64", "GOARM64", "v8.0", interp="/lib/ld-linux-aarch64.so.1", CGO_ENABLED="1")
    return verdict(c, ev(c, f, exit_code=127, stderr=stderr, **kw))


def test_missing_glibc_version_names_symbols_and_both_versions_and_a_fix_for_a_program_needing_c():
    v = _run("distroless-base", _GLIBC_ERR, symbols=(("strlcpy", "GLIBC_2.38"), ("strlcat", "GLIBC_2.38")),
             image_libc="glibc 2.36")
    assert v.verdict == "missing-library"
    assert v.explanation.startswith("distroless-base's glibc 2.36 is too old: strlcpy, strlcat need GLIBC_2.38")
    assert "`cc: zig` with `libc: gnu.2.36` on the linux/arm64 target and replace strlcpy, strlcat" in v.fix
    assert "glibc >= 2.38" in v.fix and not v.fix.startswith("build with CGO_ENABLED=0")


def test_missing_glibc_version_without_the_binarys_symbols_still_names_the_version():
    v = _run("distroless-base", _GLIBC_ERR)
    assert v.verdict == "missing-library"
    assert "distroless-base's C library is too old: it lacks GLIBC_2.38" in v.explanation
    assert "glibc >= 2.38" in v.fix


def test_musl_unresolved_symbol_says_the_binary_was_linked_against_glibc():
    err = "Error relocating /app: __memcpy_chk: symbol not found\n"
    v = _run("alpine", err, symbols=(("__memcpy_chk", "GLIBC_2.17"),), image_libc="musl 1.2.3")
    assert v.verdict == "missing-library"
    assert ("alpine's musl 1.2.3 could not resolve __memcpy_chk: the binary was linked against glibc "
            "(__memcpy_chk@GLIBC_2.17)") in v.explanation
    assert "`libc: musl`" in v.fix and "glibc image" in v.fix
