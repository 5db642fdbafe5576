"""Client security settings: one `KafkaSettings` → confluent-kafka, aiokafka and Faust options.

Every process connects as its own principal (DESIGN §9): the SASL user name and password, the
protocol and the CA file come from `CAREMESH_KAFKA__*`; these functions only translate them into
each client library's option names. With `PLAINTEXT` they return nothing, so callers can always
splat them into a client's configuration.

`confluent_config` and `aiokafka_config` are the one place where a client's connection options are
built: every Consumer, Producer, AdminClient and AIOKafka* of caremesh takes a `KafkaTarget` (the
process's `KafkaSettings`, or a bare bootstrap string for the plaintext broker of tests and tools)
and gets the bootstrap servers and the security profile from here.
"""

from __future__ import annotations

import ssl
from typing import Any, TypeAlias

from caremesh.errors import ConfigurationError
from caremesh.settings import KafkaSettings

KafkaTarget: TypeAlias = str | KafkaSettings
"""Where and as whom a client connects: the process's settings, or a plaintext bootstrap list."""


def bootstrap_of(target: KafkaTarget) -> str:
    """The bootstrap servers of a target."""
    return target if isinstance(target, str) else target.bootstrap_servers


def confluent_config(target: KafkaTarget, **overrides: Any) -> dict[str, Any]:
    """A confluent-kafka client configuration: bootstrap servers, security profile, overrides."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap_of(target)}
    if not isinstance(target, str):
        config.update(confluent_security(target))
    config.update(overrides)
    return config


def aiokafka_config(target: KafkaTarget) -> dict[str, Any]:
    """aiokafka keyword arguments: `bootstrap_servers` and the security profile."""
    options: dict[str, Any] = {"bootstrap_servers": bootstrap_of(target)}
    if not isinstance(target, str):
        options.update(aiokafka_security(target))
    return options


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


def producer_config(bootstrap_servers: KafkaTarget, **overrides: Any) -> dict[str, Any]:
    """The one configuration every confluent-kafka producer of caremesh uses.

    Idempotent writes acknowledged by all in-sync replicas, and the Java murmur2 partitioner so
    that confluent-kafka sends a key to the same partition as aiokafka and Faust (DESIGN §2).
    Given the process's `KafkaSettings`, it connects as the process's own principal.
    """
    config: dict[str, Any] = {
        **confluent_config(bootstrap_servers),
        "enable.idempotence": True,
        "acks": "all",
        "partitioner": "murmur2_random",
        "compression.type": "lz4",
        "linger.ms": 5,
        "max.in.flight.requests.per.connection": 5,
        "message.max.bytes": 16 * 1024 * 1024,
    }
    config.update(overrides)
    return config


def consumer_config(
    bootstrap_servers: KafkaTarget, group_id: str, **overrides: Any
) -> dict[str, Any]:
    """A confluent-kafka consumer that commits only what the caller stored after its output."""
    config: dict[str, Any] = {
        **confluent_config(bootstrap_servers),
        "group.id": group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
    }
    config.update(overrides)
    return config
