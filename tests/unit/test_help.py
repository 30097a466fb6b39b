"""`xrun --help` (issue 18, point 5): every command, one line each, at the 80 columns of a terminal or CI log."""

from __future__ import annotations

import re

import pytest

from xarch import cli


@pytest.mark.parametrize("columns", ["80", "100"])
def test_help_lists_every_command_on_one_line(monkeypatch: pytest.MonkeyPatch, columns: str) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    parser, names = cli._tree()
    text = parser.format_help()
    section = text.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    rows = [ln for ln in section if ln.strip() != "COMMAND"]
    # one row per command, each `NAME  HELP` with no continuation line, in COMMANDS order
    assert [re.match(r"^    (\S+)\s{2,}\S", ln).group(1) for ln in rows] == list(names)   # type: ignore[union-attr]
    assert set(names) >= {"run", "images", "doctor", "explain", "exec", "profile", "report", "gha"}
    assert all(len(ln) <= int(columns) for ln in text.splitlines())
    assert "`xrun MATRIX [OPTIONS]` is `xrun run MATRIX [OPTIONS]`" in " ".join(text.split())


def test_help_exits_0_through_main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "    explain   what a built binary is, and which images and CPUs will run it\n" in out
