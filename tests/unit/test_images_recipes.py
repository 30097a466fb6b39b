"""The shipped image definitions parse, say what they stand for, and bad ones are located by file:line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from xarch.errors import RecipeError, UnknownImage
from xarch.platforms import DEBIAN_ARCHES as ARCH_INFO
from xarch.rootfs.apt_sources import (
    AptSource,
    host_suite,
    parse_deb822_sources,
    parse_one_line_sources,
    sources_for_suite,
)
from xarch.rootfs.assemble import _merge_tree, resolve_in_root
from xarch.rootfs.definitions import ImageDef, load_definitions
from xarch.rootfs.store import DEBIAN_ARCHES, ImageStore

SHIPPED = {"scratch", "alpine", "distroless-static", "distroless-base", "distroless-cc"}


@pytest.fixture(scope="module")
def defs() -> dict[str, ImageDef]:
    return load_definitions()


def test_all_shipped_definitions_load(defs: dict[str, ImageDef]) -> None:
    assert set(defs) == SHIPPED
    for d in defs.values():
        assert d.fidelity.startswith("rebuilt equivalent:"), d.name
        assert d.description
        assert d.reference.image
        # no digest is invented: unknown ones stay null
        assert d.reference.digest is None or d.reference.digest.startswith("sha256:")


def test_supported_arches() -> None:
    assert set(DEBIAN_ARCHES) == {
        "amd64", "i386", "armel", "armhf", "arm64", "ppc64el", "s390x", "riscv64", "mips64el",
    }
    assert ARCH_INFO["arm64"].musl_arch == "aarch64"
    assert ARCH_INFO["armel"].musl_arch == "arm"


def test_scratch_is_empty(defs: dict[str, ImageDef]) -> None:
    s = defs["scratch"]
    assert (s.packages, dict(s.files), dict(s.dirs), dict(s.symlinks)) == ((), {}, {}, {})
    assert s.reference.image == "scratch"


def test_alpine_is_musl_and_busybox_without_glibc(defs: dict[str, ImageDef]) -> None:
    a = defs["alpine"]
    assert a.packages == ("musl", "busybox-static", "ca-certificates")  # like alpine: a CA bundle, no tzdata
    assert "/lib/ld-musl-{musl_arch}.so.1" in a.expect
    for applet in ("sh", "ls", "cat", "echo"):
        assert a.symlinks[f"/bin/{applet}"] == "busybox"
    assert a.symlinks["/usr/bin/env"] == "busybox"
    assert a.dirs["/tmp"].mode == 0o1777
    assert "nobody:x:65534" in a.files["/etc/passwd"].content
    assert "alpine" in a.files["/etc/os-release"].content
    assert a.reference.image.startswith("alpine:")


def test_distroless_family_layers(defs: dict[str, ImageDef]) -> None:
    static, base, cc = defs["distroless-static"], defs["distroless-base"], defs["distroless-cc"]
    assert set(static.packages) == {"ca-certificates", "tzdata", "netbase"}
    assert "ca-bundle" in static.generate
    assert not any(p.startswith(("libc6", "busybox", "dash", "bash")) for p in static.packages)
    assert "nonroot:x:65532:65532" in static.files["/etc/passwd"].content
    assert "nonroot:x:65532:" in static.files["/etc/group"].content
    assert static.dirs["/home/nonroot"].owner == (65532, 65532)
    assert static.dirs["/tmp"].mode == 0o1777
    assert base.packages[: len(static.packages)] == static.packages
    assert "libc6" in base.packages and "libssl3 | libssl3t64" in base.packages
    assert cc.packages[: len(base.packages)] == base.packages
    assert {"libgcc-s1", "libstdc++6"} <= set(cc.packages)
    # children inherit the parent's files and checks
    assert cc.files["/etc/passwd"] == static.files["/etc/passwd"]
    assert "{glibc_loader}" in cc.expect and "/etc/ssl/certs/ca-certificates.crt" in cc.expect
    assert [p.name for p in cc.sources] == ["distroless-static.yaml", "distroless-base.yaml", "distroless-cc.yaml"]
    for name in ("distroless-static", "distroless-base", "distroless-cc"):
        assert defs[name].reference.image == f"gcr.io/distroless/{name.split('-', 1)[1]}-debian12"


# ---------------------------------------------------------------------------- error paths

GOOD = """\
name: demo
description: a demo
fidelity: "rebuilt equivalent: nothing"
reference:
  image: demo:1
  digest: null
"""


def _err(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, name: str = "demo") -> str:
    # a fresh images/ per call, shown relative to the cwd as in the CLI
    case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
    d = case / "images"
    d.mkdir(parents=True)
    (d / f"{name}.yaml").write_text(textwrap.dedent(body))
    monkeypatch.chdir(case)
    with pytest.raises(RecipeError) as ei:
        load_definitions(d)
    return str(ei.value)


def test_good_minimal_definition(tmp_path: Path) -> None:
    (tmp_path / "demo.yaml").write_text(GOOD)
    d = load_definitions(tmp_path)["demo"]
    assert d.packages == () and d.reference.digest is None


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("packages:\n  - musl\n  - busybox\n  - 3\n", "images/demo.yaml:10: packages[2]: must be a string"),
        ("packages: musl\n", "images/demo.yaml:7: packages: must be a list of strings"),
        ("packages:\n  - Not_A_Package\n", "images/demo.yaml:8: packages[0]: 'Not_A_Package' is not a Debian"),
        ("colour: red\n", "images/demo.yaml:7: colour: unknown key; allowed: description, dirs"),
        ("pakages: [musl]\n", "images/demo.yaml:7: pakages: unknown key (did you mean 'packages'?); allowed:"),
        ("dirs:\n  /tmp: 1777\n", 'images/demo.yaml:8: dirs[/tmp]: must be a quoted octal mode string like "0755"'),
        ("dirs:\n  tmp: \"1777\"\n", "images/demo.yaml:8: dirs[tmp]: must be an absolute path below /"),
        ("dirs:\n  /a/../b: \"0755\"\n", "images/demo.yaml:8: dirs[/a/../b]: must be a normalized path"),
        ("dirs:\n  /h:\n    mode: \"0700\"\n    owner: root\n", 'images/demo.yaml:10: dirs[/h].owner: must be a "uid:gid"'),
        ("files:\n  /etc/x:\n    mode: \"0644\"\n", "images/demo.yaml:8: files[/etc/x].content: is required"),
        ("files:\n  /etc/x:\n    content: hi\n    colour: red\n",
         "images/demo.yaml:10: files[/etc/x].colour: unknown key"),
        ("symlinks:\n  /bin/{shell}: busybox\n", "images/demo.yaml:8: symlinks[/bin/{shell}]: unknown placeholder {shell}"),
        ("generate: [ca-bundle, sbom]\n", "images/demo.yaml:7: generate[1]: unknown generator 'sbom'"),
        ("extends: nowhere\n", "images/demo.yaml:7: extends: no definition named 'nowhere'"),
        ("expect:\n  - relative/path\n", "images/demo.yaml:8: expect[0]: must be an absolute path"),
        ("forms:\n  Nonroot: {user: nonroot}\n", "images/demo.yaml:8: forms.Nonroot: a form name is lower-case"),
        ("forms:\n  nonroot:\n    user: nonroot\n    shell: sh\n", "images/demo.yaml:10: forms.nonroot.shell: unknown key"),
        ("forms:\n  nonroot:\n    workdir: home\n", "images/demo.yaml:9: forms.nonroot.workdir: must be an absolute path"),
        ("forms:\n  nonroot:\n    user: 'a b'\n", 'images/demo.yaml:9: forms.nonroot.user: must be "uid[:gid]"'),
    ],
)
def test_errors_name_file_line_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, extra: str, expected: str
) -> None:
    assert _err(tmp_path, monkeypatch, GOOD + extra).startswith(expected)


def test_reference_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_digest = GOOD.replace("digest: null", "digest: sha256:1234")
    assert _err(tmp_path, monkeypatch, bad_digest) == (
        "images/demo.yaml:6: reference.digest: must be sha256:<64 hex> or null"
    )
    extra_key = GOOD.replace("  digest: null", "  digest: null\n  tag: latest")
    assert _err(tmp_path, monkeypatch, extra_key).startswith("images/demo.yaml:7: reference.tag: unknown key")


def test_required_keys_and_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_fidelity = GOOD.replace('fidelity: "rebuilt equivalent: nothing"\n', "")
    assert _err(tmp_path, monkeypatch, no_fidelity) == "images/demo.yaml:1: fidelity: is required"
    assert _err(tmp_path, monkeypatch, GOOD, name="other").startswith(
        "images/other.yaml:1: name: must match the file name ('other')"
    )


def test_yaml_syntax_and_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    msg = _err(tmp_path, monkeypatch, GOOD + "packages: [musl\nfiles: {}\n")
    assert msg.startswith("images/demo.yaml:8: invalid YAML"), msg
    msg = _err(tmp_path, monkeypatch, GOOD + "name: again\n")
    assert msg.startswith("images/demo.yaml:7: invalid YAML"), msg
    assert _err(tmp_path, monkeypatch, "- a list\n") == (
        "images/demo.yaml:1: must be a mapping of keys (name, description, ...)"
    )


def test_extends_cycle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "images"
    d.mkdir()
    (d / "a.yaml").write_text(GOOD.replace("name: demo", "name: a") + "extends: b\n")
    (d / "b.yaml").write_text(GOOD.replace("name: demo", "name: b") + "extends: a\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=r"images/(a|b)\.yaml:7: extends: cycle: "):
        load_definitions(d)


def test_recipe_error_fields(tmp_path: Path) -> None:
    e = RecipeError(tmp_path / "x.yaml", 3, "files", "bad")
    assert (e.line, e.key, e.message) == (3, "files", "bad")
    assert str(e).endswith("x.yaml:3: files: bad")
    assert e.exit_code == 2


def test_unknown_image_and_arch(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "cache")
    with pytest.raises(UnknownImage, match="unknown image 'nope'"):
        store.path("nope", "arm64")
    with pytest.raises(UnknownImage, match="unknown Debian arch 'aarch64'"):
        store.ensure("alpine", "aarch64")
    assert store.path("alpine", "arm64") is None
    assert store.list() == []
    assert not (tmp_path / "cache").exists()  # queries never create the cache


def test_default_cache_dir_honours_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ImageStore().cache_dir == tmp_path / "xarch" / "images"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert ImageStore().cache_dir == Path.home() / ".cache" / "xarch" / "images"


# ---------------------------------------------------------------------------- apt sources

KEY = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n mQINBF\n -----END PGP PUBLIC KEY BLOCK-----"


def test_parse_deb822_sources() -> None:
    text = f"""\
Types: deb deb-src
# a comment
URIs: file:/srv/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: file:/srv/src
Suites: bookworm
Components: main

Types: deb
URIs: file:/srv/off
Suites: bookworm
Components: main
Enabled: no

Types: deb
URIs: file:/srv/inline
Suites: bookworm-security
Components: main
Signed-By:
 {KEY}
"""
    got = parse_deb822_sources(text)
    assert [(s.uri, s.suite, s.components) for s in got] == [
        ("file:/srv/debian", "bookworm", ("main", "contrib")),
        ("file:/srv/debian", "bookworm-updates", ("main", "contrib")),
        ("file:/srv/inline", "bookworm-security", ("main",)),
    ]
    assert got[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert got[2].signed_by is not None and got[2].signed_by.splitlines()[2] == "mQINBF"


def test_parse_one_line_sources() -> None:
    text = """\
# comment
deb [arch=amd64 signed-by=/k.gpg] file:/srv/debian bookworm main non-free
deb-src file:/srv/debian bookworm main
deb file:/srv/security bookworm-security main  # trailing
"""
    got = parse_one_line_sources(text)
    assert got == [
        AptSource("file:/srv/debian", "bookworm", ("main", "non-free"), "/k.gpg"),
        AptSource("file:/srv/security", "bookworm-security", ("main",), None),
    ]


def test_sources_are_moved_to_another_suite() -> None:
    srcs = [
        AptSource("file:/d", "bookworm", ("main",), "/k"),
        AptSource("file:/d", "bookworm-updates", ("main",), "/k"),
        AptSource("file:/s", "bookworm-security", ("main",), "/k"),
        AptSource("file:/third", "cloud-sdk-bookworm", ("main",), None),
        AptSource("file:/node", "nodistro", ("main",), None),
    ]
    assert [s.suite for s in sources_for_suite(srcs, "bookworm", "trixie")] == [
        "trixie", "trixie-updates", "trixie-security",
    ]
    assert [s.uri for s in sources_for_suite(srcs, "bookworm", "bookworm")] == ["file:/d", "file:/d", "file:/s"]
    assert host_suite([]) is None
    assert host_suite(srcs[1:2]) == "bookworm"


# ---------------------------------------------------------------------------- merged /usr


def test_merge_tree_moves_lib_into_usr_and_keeps_relative_links(tmp_path: Path) -> None:
    src, root = tmp_path / "src", tmp_path / "root"
    (src / "lib" / "arm-linux-musleabi").mkdir(parents=True)
    (src / "lib" / "arm-linux-musleabi" / "libc.so").write_bytes(b"\x7fELF")
    os.symlink("arm-linux-musleabi/libc.so", src / "lib" / "ld-musl-arm.so.1")
    (src / "etc").mkdir()
    os.symlink("../lib/arm-linux-musleabi/libc.so", src / "etc" / "libc-link")
    (src / "usr" / "share" / "man").mkdir(parents=True)
    (src / "usr" / "share" / "man" / "x.1").write_text("x")
    root.mkdir()
    (root / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", root / "lib")
    _merge_tree(src, root, "", lambda p: p.startswith("/usr/share/man/"))
    assert os.readlink(root / "usr/lib/ld-musl-arm.so.1") == "arm-linux-musleabi/libc.so"
    assert os.readlink(root / "etc/libc-link") == "../lib/arm-linux-musleabi/libc.so"
    assert (root / "usr/share/man").is_dir() and not (root / "usr/share/man/x.1").exists()
    found = resolve_in_root(root, "/lib/ld-musl-arm.so.1")
    assert found == root / "usr/lib/arm-linux-musleabi/libc.so"
    # an absolute link is resolved inside the image, never on the host
    os.symlink("/etc/../../../lib/ld-musl-arm.so.1", root / "escape")
    assert resolve_in_root(root, "/escape") == found
    assert resolve_in_root(root, "/nope/x") is None


def test_forms_are_inherited_and_named_image_colon_form(defs: dict[str, ImageDef]) -> None:
    from xarch.rootfs.definitions import form_config, image_names

    for name in ("distroless-static", "distroless-base", "distroless-cc"):
        assert defs[name].forms["nonroot"].config() == {"user": "65532:65532", "workdir": "/home/nonroot"}
    assert "distroless-cc:nonroot" in image_names(defs) and "alpine:nonroot" not in image_names(defs)
    assert form_config("distroless-base:nonroot") == {"user": "65532:65532", "workdir": "/home/nonroot"}
    assert form_config("distroless-base") is None and form_config("alpine:nonroot") is None
