from pathlib import Path

import pytest

from caremesh.settings import KafkaSettings, Settings


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


def test_default_paths_do_not_come_from_the_source_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import caremesh

    package = Path(caremesh.__file__).resolve().parent
    monkeypatch.delenv("CAREMESH_STATE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    kafka = KafkaSettings()
    # the broker's pom and templates ship inside the package (an installed wheel has them)
    assert kafka.local_home.is_relative_to(package)
    assert (kafka.local_home / "pom.xml").is_file()
    assert (kafka.local_home / "server.properties.in").is_file()
    # jars go to the user's cache, state to the working directory
    assert kafka.local_cache_dir == tmp_path / "cache" / "caremesh" / "kafka"
    assert Settings().state_dir == tmp_path / ".caremesh"
    assert kafka.local_data_dir == tmp_path / ".caremesh" / "kafka"


def test_the_state_dir_variable_moves_every_local_process_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREMESH_STATE_DIR", str(tmp_path / "state"))
    settings = Settings()
    assert settings.state_dir == tmp_path / "state"
    assert settings.kafka.local_data_dir == tmp_path / "state" / "kafka"
    assert settings.worker.data_dir == tmp_path / "state" / "worker"
