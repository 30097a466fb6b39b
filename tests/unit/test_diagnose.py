"""Build causes from recorded go output (diagnose.build_cause), with the project laid out in tmp_path."""

from __future__ import annotations

from pathlib import Path

from xarch.diagnose import build_cause
from xarch.plan import BuildJob, Target

# go 1.27.3, `go build ./hello` from a module root whose hello/ has its own go.mod
NOT_IN_MAIN = ("$ go build -trimpath -o dist/hello-linux-amd64 ./hello\n"
               "main module (example.com/nested) does not contain package example.com/nested/hello\n")


def _job(project: Path, matrix_dir: Path | None = None) -> BuildJob:
    t = Target("linux/amd64", "linux", "amd64", None)
    return BuildJob(t, ("go", "build", "./hello"), False, {"GOOS": "linux", "GOARCH": "amd64"}, (),
                    project / "dist" / "x", "dist/x", project, False, matrix_dir=matrix_dir or project)


def _layout(root: Path, *mods: str) -> None:
    (root / "go.mod").write_text("module example.com/nested\n\ngo 1.22\n")
    for m in mods:
        (root / m).mkdir(parents=True, exist_ok=True)
        (root / m / "go.mod").write_text(f"module example.com/nested/{m}\n\ngo 1.22\n")


def test_nested_module_names_the_project_and_package(tmp_path):
    _layout(tmp_path, "hello")
    c = build_cause(_job(tmp_path), NOT_IN_MAIN)
    assert c is not None and c.cause == "nested-module"
    assert c.fix == "build from that module: `project: hello` and `package: .` in the matrix"
    assert "hello/go.mod makes hello/ a module of its own (example.com/nested/hello)" in c.explanation
    assert "main module (example.com/nested)" in c.explanation


def test_nested_module_deeper_package_and_project_relative_to_the_matrix(tmp_path):
    proj = tmp_path / "repo"
    proj.mkdir()
    _layout(proj, "hello")
    log = NOT_IN_MAIN.replace("example.com/nested/hello\n", "example.com/nested/hello/cmd/hi\n")
    c = build_cause(_job(proj, matrix_dir=tmp_path), log)
    assert c is not None and c.fix == "build from that module: `project: repo/hello` and `package: ./cmd/hi` in the matrix"


def test_workspace_wording_is_recognised_too(tmp_path):
    _layout(tmp_path, "hello")
    log = ("go: directory hello is contained in a module that is not one of the workspace modules listed in "
           "go.work. You can add the module to the workspace using:\n\tgo work use hello\n")
    c = build_cause(_job(tmp_path), log)
    assert c is not None and c.cause == "nested-module" and "`project: hello`" in c.fix


def test_without_a_nested_go_mod_it_is_not_this_cause(tmp_path):
    _layout(tmp_path)
    (tmp_path / "hello").mkdir()
    assert build_cause(_job(tmp_path), NOT_IN_MAIN) is None
