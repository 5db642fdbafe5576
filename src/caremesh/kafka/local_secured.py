"""The secured local broker's configuration: server properties and format-time SCRAM users.

Pure text rendering for `caremesh.kafka.local` (Apache Kafka 4.1, KRaft): the client listener
takes SASL/SCRAM-SHA-512 (SASL_PLAINTEXT, or SASL_SSL with a keystore), the controller listener
SASL/PLAIN, the `StandardAuthorizer` denies what no ACL allows, and the broker's own principal
and the admin are the super users. SCRAM credentials for `kafka-storage format --add-scram`
follow KIP-900's `SCRAM-SHA-512=[name=...,password=...]` syntax.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from caremesh.errors import ConfigurationError

BROKER_USER = "caremesh-broker"
"""The secured local broker's own principal (inter-broker and controller connections)."""
SCRAM_MECHANISM = "SCRAM-SHA-512"

_SAFE_USER = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")
_SAFE_PASSWORD = re.compile(r"^[A-Za-z0-9._~+/@%:!?*#^-]{8,256}$")


def check_credential(user: str, password: str) -> None:
    """Refuse names and passwords that JAAS or the format tool's parser would misread.

    The error names the user only, never the password.
    """
    if not _SAFE_USER.match(user):
        raise ConfigurationError("a SCRAM user name may hold only letters, digits and . _ @ -")
    if not _SAFE_PASSWORD.match(password):
        raise ConfigurationError(
            f"the password of SCRAM user {user} must be 8-256 characters without quotes, "
            "backslashes, commas, brackets, '=' or spaces"
        )


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The broker's keystore and truststore (PKCS12), sharing one password."""

    keystore: Path
    truststore: Path
    password: str


def client_protocol(tls: TlsFiles | None) -> str:
    """The client listener's security protocol."""
    return "SASL_SSL" if tls is not None else "SASL_PLAINTEXT"


def secured_properties(
    template: str,
    *,
    node_values: Mapping[str, str],
    broker_password: str,
    admin_user: str,
    tls: TlsFiles | None = None,
) -> str:
    """`server-secured.properties.in` with its placeholders filled in: the node's own
    (`caremesh.kafka.local_layout.node_values`), then the security profile's. Every node of a
    cluster gets the same broker password, so that the nodes authenticate to each other."""
    check_credential(BROKER_USER, broker_password)
    if not _SAFE_USER.match(admin_user):
        raise ConfigurationError("the admin user name may hold only letters, digits and . _ @ -")
    ssl_lines = ""
    if tls is not None:
        if not _SAFE_PASSWORD.match(tls.password):
            raise ConfigurationError("the keystore password holds characters that are not allowed")
        ssl_lines = "\n".join(
            [
                f"listener.name.client.ssl.keystore.location={tls.keystore}",
                f"listener.name.client.ssl.keystore.password={tls.password}",
                "listener.name.client.ssl.keystore.type=PKCS12",
                f"listener.name.client.ssl.truststore.location={tls.truststore}",
                f"listener.name.client.ssl.truststore.password={tls.password}",
                "listener.name.client.ssl.truststore.type=PKCS12",
            ]
        )
    values = {
        **node_values,
        "@CLIENT_PROTOCOL@": client_protocol(tls),
        "@BROKER_USER@": BROKER_USER,
        "@BROKER_PASSWORD@": broker_password,
        "@SUPER_USERS@": f"User:{BROKER_USER};User:{admin_user}",
        "@SSL_LINES@": ssl_lines,
    }
    text = template
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def scram_format_args(users: Mapping[str, str]) -> list[str]:
    """`--add-scram` arguments of `StorageTool format` for each user → password."""
    args: list[str] = []
    for user, password in sorted(users.items()):
        check_credential(user, password)
        args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
    return args
