"""The bench's Faust app takes the same broker credentials as the product's aiokafka clients
(`bench.faust_app.faust_credentials`)."""

from __future__ import annotations

from pathlib import Path

from bench.faust_app import faust_credentials
from pydantic import SecretStr

from caremesh.settings import KafkaSettings


def _sasl(**extra: object) -> KafkaSettings:
    values: dict[str, object] = {
        "security_protocol": "SASL_PLAINTEXT",
        "username": "caremesh-validate",
        "password": SecretStr("s3cret-pass"),
        **extra,
    }
    return KafkaSettings.model_validate(values)


def test_plaintext_has_no_credentials() -> None:
    assert faust_credentials(KafkaSettings()) is None


def test_sasl_credentials() -> None:
    creds = faust_credentials(_sasl())
    assert creds.username == "caremesh-validate"
    assert creds.password == "s3cret-pass"
    assert creds.mechanism.value == "SCRAM-SHA-512"
    assert creds.protocol.value == "SASL_PLAINTEXT"


def test_sasl_ssl_uses_the_ca_file() -> None:
    import certifi  # httpx depends on it: a CA bundle that is surely there

    creds = faust_credentials(_sasl(security_protocol="SASL_SSL", ssl_cafile=Path(certifi.where())))
    assert creds.protocol.value == "SASL_SSL"
    assert creds.ssl_context is not None
