"""A user's mistake on the command line is one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from caremesh.cli.main import main


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return lines[-1]


def test_an_unknown_stage_is_refused_with_the_stages_it_knows(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--stage", "nope"])
    assert exit_info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert "invalid choice: 'nope'" in line
    assert "validate" in line


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CAREMESH_CONSENT__FALLBACK", "permitt"),
        ("CAREMESH_CONSENT__DEFAULTS", '{"TREAT": "permitt"}'),
        ("CAREMESH_STUDIES", '[{"id": "s1", "consent_default": "permitt"}]'),
    ],
)
def test_a_misspelt_consent_default_stops_the_command(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, "permitt" silently meant deny and turned an opt-out study into an opt-in one."""
    monkeypatch.setenv(variable, value)
    assert main(["topics", "list"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "invalid configuration" in line
    assert "'permit' or 'deny'" in line
    assert "permitt" not in line  # the value given is never echoed (it could be a secret)


def test_consent_defaults_accept_any_case(monkeypatch: pytest.MonkeyPatch) -> None:
    from caremesh.settings import Settings

    monkeypatch.setenv("CAREMESH_CONSENT__FALLBACK", " Permit ")
    assert Settings().consent.fallback == "permit"


@pytest.mark.parametrize(
    "rule_file",
    [
        pytest.param(lambda tmp: tmp / "missing.json", id="missing"),
        pytest.param(lambda tmp: _write(tmp / "bad.json", "{not json"), id="not-json"),
        pytest.param(lambda tmp: _write(tmp / "empty.json", json.dumps([])), id="not-rules"),
    ],
)
def test_an_unreadable_rule_file_is_one_line_and_exit_2(
    rule_file: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "in.json", json.dumps({"resourceType": "Patient", "id": "p1"}))
    path = rule_file(tmp_path)  # type: ignore[operator]
    code = main(["pseudonymise", "--config", str(path), str(source), str(tmp_path / "out.json")])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("caremesh pseudonymise:")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
