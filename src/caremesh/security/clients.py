"""Client security settings: one `KafkaSettings` → confluent-kafka, aiokafka and Faust options.

Every process connects as its own principal (DESIGN §9): the SASL user name and password, the
protocol and the CA file come from `CAREMESH_KAFKA__*`; these functions only translate them into
each client library's option names. With `PLAINTEXT` they return nothing, so callers can always
splat them into a client's configuration.
"""

from __future__ import annotations

import ssl
from typing import Any

from caremesh.errors import ConfigurationError
from caremesh.settings import KafkaSettings


def _check(kafka: KafkaSettings) -> None:
    if kafka.security_protocol.startswith("SASL_"):
        _sasl(kafka)


def _sasl(kafka: KafkaSettings) -> tuple[str, str]:
    if not kafka.username or kafka.password is None:
        raise ConfigurationError(
            f"security_protocol {kafka.security_protocol} needs CAREMESH_KAFKA__USERNAME "
            "and CAREMESH_KAFKA__PASSWORD"
        )
    return kafka.username, kafka.password.get_secret_value()


def confluent_security(kafka: KafkaSettings) -> dict[str, str]:
    """librdkafka (confluent-kafka) properties of the configured security profile."""
    _check(kafka)
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    config: dict[str, str] = {"security.protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL_"):
        username, password = _sasl(kafka)
        config["sasl.mechanism"] = kafka.sasl_mechanism
        config["sasl.username"] = username
        config["sasl.password"] = password
    if kafka.security_protocol.endswith("SSL"):
        if kafka.ssl_cafile is not None:
            config["ssl.ca.location"] = str(kafka.ssl_cafile)
        if kafka.ssl_certfile is not None:
            config["ssl.certificate.location"] = str(kafka.ssl_certfile)
        if kafka.ssl_keyfile is not None:
            config["ssl.key.location"] = str(kafka.ssl_keyfile)
    return config


def ssl_context(kafka: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of the SSL protocols (verifying the brokers against `ssl_cafile`)."""
    if not kafka.security_protocol.endswith("SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile is not None else None
    )
    if kafka.ssl_certfile is not None:
        context.load_cert_chain(
            str(kafka.ssl_certfile),
            str(kafka.ssl_keyfile) if kafka.ssl_keyfile is not None else None,
        )
    return context


def aiokafka_security(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments (`AIOKafkaConsumer(..., **aiokafka_security(kafka))`)."""
    _check(kafka)
    if kafka.security_protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    if kafka.security_protocol.startswith("SASL_"):
        username, password = _sasl(kafka)
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = username
        options["sasl_plain_password"] = password
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    return options


def faust_credentials(kafka: KafkaSettings) -> Any:
    """Faust's `broker_credentials`: SASL credentials, TLS credentials, or None for PLAINTEXT."""
    _check(kafka)
    import faust  # noqa: PLC0415 - only the worker needs Faust

    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = ssl_context(kafka)
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(context)
    username, password = _sasl(kafka)
    return faust.SASLCredentials(
        username=username,
        password=password,
        ssl_context=context,
        mechanism=kafka.sasl_mechanism,
    )
