import pytest

from caremesh.settings import Settings


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREMESH_KAFKA__BOOTSTRAP_SERVERS", "broker:29092")
    monkeypatch.setenv("CAREMESH_KAFKA__PARTITIONS", "12")
    monkeypatch.setenv(
        "CAREMESH_ORGANISATIONS",
        '[{"id": "gp-nord", "token": "s3cret", "subscriptions": ["Observation"]}]',
    )
    s = Settings()
    assert s.kafka.bootstrap_servers == "broker:29092"
    assert s.kafka.partitions == 12
    assert s.organisations[0].id == "gp-nord"
    assert "s3cret" not in repr(s)


def test_unsafe_organisation_id_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREMESH_ORGANISATIONS", '[{"id": "../etc"}]')
    with pytest.raises(ValueError, match="organisation id"):
        Settings()


def test_secrets_can_come_from_files(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "caremesh_pseudonym__master_key").write_text("ab" * 32)
    monkeypatch.delenv("CAREMESH_PSEUDONYM__MASTER_KEY", raising=False)
    s = Settings(_secrets_dir=tmp_path)
    assert s.pseudonym.master_key is not None
    assert s.pseudonym.master_key.get_secret_value() == "ab" * 32
    assert "abab" not in repr(s)
