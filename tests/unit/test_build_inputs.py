"""The build key's source part: which commands go list can model, what its answer means, and when a
stored answer is still good (pure logic and the file system only; the real go list is in tests/e2e)."""

from __future__ import annotations

import os
from pathlib import Path

from xarch.build_inputs import Listing, Record, listing_from, parse_go_build

DEFAULT = ("go", "build", "-trimpath", "-o", "dist/app", ".")


def test_the_default_command_lists_its_package_with_its_flags_minus_the_output():
    gb = parse_go_build(DEFAULT, {})
    assert gb is not None
    assert (gb.flags, gb.packages, gb.buildvcs) == (("-trimpath",), (".",), "auto")
    gb = parse_go_build(("/usr/lib/go/bin/go", "build", "-tags", "netgo", "-o=out", "-ldflags=-s", "./cmd/x"), {})
    assert gb is not None
    assert (gb.flags, gb.packages) == (("-tags", "netgo", "-ldflags=-s"), ("./cmd/x",))


def test_commands_go_list_cannot_model_key_on_the_tree():
    for argv in (("make", "app"), ("go", "run", "."), ("garble", "build", "."),
                 ("go", "build", "-toolexec", "wrap", "."), ("go", "build", "-overlay=o.json", "."),
                 ("go", "build", "-o")):
        assert parse_go_build(argv, {}) is None, argv
    assert parse_go_build(DEFAULT, {"GOFLAGS": "-overlay=/tmp/o.json"}) is None


def test_buildvcs_comes_from_the_command_before_goflags():
    assert parse_go_build(DEFAULT, {"GOFLAGS": "-buildvcs=false -mod=mod"}).buildvcs == "false"
    argv = ("go", "build", "-buildvcs=true", ".")
    assert parse_go_build(argv, {"GOFLAGS": "-buildvcs=false"}).buildvcs == "true"


def _pkg(d: str, **kw: object) -> dict[str, object]:
    return {"Dir": d, "ImportPath": "example.com/" + os.path.basename(d), **kw}


def test_a_listing_hashes_compiled_files_and_only_watches_ignored_ones(tmp_path):
    main, lib = str(tmp_path), str(tmp_path / "lib")
    mod = {"Path": "example.com/app", "Main": True, "Dir": main, "GoMod": f"{main}/go.mod"}
    pkgs = [{"Dir": "/goroot/src/fmt", "ImportPath": "fmt", "Standard": True, "GoFiles": ["print.go"]},
            _pkg(lib, Module=mod, GoFiles=["lib.go"], EmbedFiles=["static/a.txt"], EmbedPatterns=["static"],
                 IgnoredGoFiles=["lib_windows.go"]),
            _pkg(main, Module=mod, GoFiles=["main.go"], SFiles=["x_amd64.s"])]
    got = listing_from(pkgs, tmp_path)
    assert got is not None
    assert {f"{lib}/lib.go", f"{lib}/static/a.txt", f"{main}/main.go", f"{main}/x_amd64.s", f"{main}/go.mod",
            f"{main}/go.sum", f"{main}/go.work", f"{main}/vendor/modules.txt"} <= set(got.compiled)
    assert f"{lib}/lib_windows.go" in got.watched and f"{lib}/lib_windows.go" not in got.compiled
    assert not any(p.startswith("/goroot") for p in got.watched)     # the toolchain's identity covers them
    assert str(tmp_path.parent / "go.work") in got.compiled          # go looks for go.work upwards
    assert (got.dirs, got.walk, got.cgo) == ((main, lib), (lib,), False)
    assert listing_from([_pkg(main, CgoFiles=["c.go"])], tmp_path).cgo is True
    assert listing_from([_pkg(main, Error={"Err": "no Go files"})], tmp_path) is None


def _record(tmp_path: Path) -> tuple[Record, Listing, Path]:
    pkg = tmp_path / "pkg"
    (pkg / "static").mkdir(parents=True)
    (pkg / "a.go").write_text("package pkg\n")
    (pkg / "static" / "x.txt").write_text("x")
    old = 1_000_000_000_000_000_000     # long ago: the stat is trusted
    for p in (pkg / "a.go", pkg / "static" / "x.txt"):
        os.utime(p, ns=(old, old))
    listing = Listing(compiled=(str(pkg / "a.go"),), watched=(str(pkg / "a.go"), str(pkg / "b.go")),
                      dirs=(str(pkg),), trees=(), walk=(), cgo=False)
    rec = Record(tmp_path / "rec.json")
    rec.save("k", listing, None)
    return rec, listing, pkg


def test_a_stored_answer_holds_until_what_go_list_read_changes(tmp_path):
    rec, _listing, pkg = _record(tmp_path)
    assert rec.load("k") is not None
    assert rec.load("other invocation") is None
    (tmp_path / "README.md").write_text("not in any package dir")
    (pkg / ".pytest_cache").mkdir()                     # a subdirectory: go build never compiles it
    assert rec.load("k") is not None
    os.utime(pkg / "a.go")                              # touched, same content: still good
    assert rec.load("k") is not None
    (pkg / "a.go").write_text("package pkg // edited\n")
    assert rec.load("k") is None


def test_a_new_file_in_a_package_dir_or_a_watched_absent_file_appearing_invalidates(tmp_path):
    rec, _listing, pkg = _record(tmp_path)
    (pkg / "c.go").write_text("package pkg\n")
    assert rec.load("k") is None
    rec2, _listing, pkg2 = _record(tmp_path / "again")
    os.rename(pkg2 / "a.go", pkg2 / "b.go")     # b.go was watched as absent
    assert rec2.load("k") is None


def test_an_embedding_package_watches_every_directory_under_it(tmp_path):
    rec, listing, pkg = _record(tmp_path)
    rec.save("k", Listing(compiled=listing.compiled, watched=listing.watched, dirs=listing.dirs, trees=(),
                          walk=(str(pkg),), cgo=False), None)
    assert rec.load("k") is not None
    (pkg / "static" / "sub").mkdir()
    assert rec.load("k") is None


def test_a_file_changed_just_before_hashing_is_hashed_again_not_trusted_by_stat(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    f = pkg / "a.go"
    f.write_text("package pkg\n")           # now: racily clean
    listing = Listing(compiled=(str(f),), watched=(str(f),), dirs=(str(pkg),), trees=(), walk=(), cgo=False)
    rec = Record(tmp_path / "rec.json")
    stored = rec.save("k", listing, None)
    assert stored["files"][str(f)][1] == -1
    st = f.stat()
    f.write_text("package pkx\n")           # same size; a coarse clock could give the same mtime
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert rec.load("k") is None
