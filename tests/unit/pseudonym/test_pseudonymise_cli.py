"""`caremesh pseudonymise`: files and folders, JSON and NDJSON, keys, and errors without values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from caremesh.cli.main import main
from caremesh.envelope import PatientKey
from caremesh.pseudonym import Keyring, load_preset, study_anonymizer

INS = "urn:oid:1.2.250.1.213.1.4.8"
MASTER = "ab" * 32
SECRET_NAME = "Zorglubine-Quetzal"


def _patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": f"p{n}",
        "identifier": [{"system": INS, "value": f"29901750000{n:02d}"}],
        "name": [{"family": SECRET_NAME, "given": [f"Given{n}"]}],
        "birthDate": "1970-05-04",
        "address": [{"line": ["1 rue Canari"], "postalCode": "69007"}],
    }


def _obs(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": f"Patient/p{n}", "display": SECRET_NAME},
        "effectiveDateTime": "2026-03-02T10:00:00+01:00",
        "note": [{"text": f"{SECRET_NAME} called"}],
    }


def _ndjson(*resources: dict[str, Any]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in resources)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREMESH_PSEUDONYM__MASTER_KEY", MASTER)
    monkeypatch.delenv("CAREMESH_SECRETS_DIR", raising=False)


def test_a_folder_is_mirrored_with_identifiers_gone_and_bad_lines_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / "patients.ndjson").write_bytes(_ndjson(_patient(1), _patient(2)))
    bad = _ndjson(_obs(1)) + b'{"name": "' + SECRET_NAME.encode() + b'"\n' + b"[1]\n"
    (src / "sub" / "obs.ndjson").write_bytes(bad)
    (src / "one.json").write_bytes(orjson.dumps(_obs(2)))
    (src / "notes.txt").write_text("ignored")

    code = main(
        ["pseudonymise", "--config", "gdpr-research", "--quiet", str(src), str(tmp_path / "out")]
    )
    out = capsys.readouterr().out
    assert code == 4
    written = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    assert written == ["one.json", "patients.ndjson", "sub", "sub/obs.ndjson"]
    assert "files: 3  resources: 4  rejected: 2" in out
    assert f"rejected: {src / 'sub' / 'obs.ndjson'}:2: invalid-json" in out
    assert f"rejected: {src / 'sub' / 'obs.ndjson'}:3: not-a-resource" in out
    assert SECRET_NAME not in out
    patients = [
        orjson.loads(line)
        for line in (tmp_path / "out" / "patients.ndjson").read_bytes().splitlines()
    ]
    obs = orjson.loads((tmp_path / "out" / "sub" / "obs.ndjson").read_bytes())
    everything = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.*json"))
    for secret in (SECRET_NAME, "2990175000001", "rue Canari", "69007", "1970-05-04", "Given1"):
        assert secret.encode() not in everything
    # patient-scoped: the Patient's pseudonym is the Observation's subject, within the study
    assert obs["subject"]["reference"] == f"Patient/{patients[0]['id']}"
    assert patients[0]["id"] != patients[1]["id"]
    assert patients[0]["address"][0]["postalCode"] == "69"


def test_same_study_name_gives_the_streams_pseudonyms_and_key_file_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CAREMESH_PSEUDONYM__MASTER_KEY")
    key_file = tmp_path / "master.key"
    key_file.write_text(MASTER + "\n")
    src = tmp_path / "p.json"
    src.write_bytes(orjson.dumps(_patient(3)))
    args = ["pseudonymise", "--config", "gdpr-research", "--quiet", "--key-file", str(key_file)]
    assert main([*args, "--study", "study-a", str(src), str(tmp_path / "p.out.json")]) == 0
    got = orjson.loads((tmp_path / "p.out.json").read_bytes())
    ring = Keyring.single(bytes.fromhex(MASTER))
    stream = study_anonymizer("study-a", ring, load_preset("gdpr-research"))
    expected = stream.apply(_patient(3), patient_key=PatientKey("2990175000003"))
    assert got["id"] == expected["id"]
    assert got["identifier"] == expected["identifier"]
    # another study: unlinkable pseudonym
    assert main([*args, "--study", "study-b", str(src), str(tmp_path / "b.json")]) == 0
    assert orjson.loads((tmp_path / "b.json").read_bytes())["id"] != got["id"]
    assert "rejected: 0" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("no-key", "no master key: set CAREMESH_PSEUDONYM__MASTER_KEY"),
        ("short-key", "at least 32 bytes"),
        ("bad-rules", "neither a preset (gdpr-research, hipaa-safe-harbor) nor a rule file"),
        ("missing-input", "no such file or folder"),
        ("exists", "exists (pass --force to overwrite)"),
        ("same-file", "OUT would overwrite its input"),
        ("wrong-suffix", "expected a .json, .ndjson or .jsonl file"),
    ],
)
def test_bad_invocations_fail_with_a_clear_message_and_no_output(
    setup: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "in.ndjson"
    src.write_bytes(_ndjson(_patient(1)))
    out = tmp_path / "out.ndjson"
    rules = "gdpr-research"
    if setup == "no-key":
        monkeypatch.delenv("CAREMESH_PSEUDONYM__MASTER_KEY")
    elif setup == "short-key":
        monkeypatch.setenv("CAREMESH_PSEUDONYM__MASTER_KEY", "tiny-Zorglub")
    elif setup == "bad-rules":
        rules = "gdpr-reserch"
    elif setup == "missing-input":
        src = tmp_path / "nope.ndjson"
    elif setup == "exists":
        out.write_text("keep me")
    elif setup == "same-file":
        out = src
    elif setup == "wrong-suffix":
        src = src.rename(tmp_path / "in.csv")
    code = main(["pseudonymise", "--config", rules, "--quiet", str(src), str(out)])
    err = capsys.readouterr().err
    assert code == 2  # the user's mistake (errors.ConfigurationError)
    assert message in err
    assert "Zorglub" not in err
    if setup == "exists":
        assert out.read_text() == "keep me"
    elif setup != "same-file":
        assert not out.exists()
