"""Bearer authentication without a server: configuration errors, claims, refusal codes."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr

from caremesh.connectors.http.auth import (
    AuthRefusedError,
    BearerAuth,
    Caller,
    JwtVerifier,
    Role,
    StaticToken,
)
from caremesh.errors import ConfigurationError
from caremesh.settings import OidcSettings

KEY = ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def oidc(tmp_path: Path) -> OidcSettings:
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "k.pem").write_bytes(pem)
    return OidcSettings(issuer="https://idp", audience="api", public_key_files=[tmp_path / "k.pem"])


def _token(**claims: object) -> str:
    body: dict[str, object] = {"iss": "https://idp", "aud": "api", "sub": "u1"}
    # parametrize builds these tokens at collection time, possibly long before the test runs
    body["exp"] = int(time.time()) + 86_400
    body.update(claims)
    return jwt.encode(body, KEY, algorithm="ES256")


def test_an_issuer_needs_an_audience_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        JwtVerifier.from_settings(OidcSettings(issuer="https://idp"))
    with pytest.raises(ConfigurationError):
        JwtVerifier.from_settings(OidcSettings(issuer="https://idp", audience="api"))
    assert JwtVerifier.from_settings(OidcSettings()) is None


@pytest.mark.parametrize(
    ("claims", "roles"),
    [
        ({"roles": ["auditor", "coordinator"]}, {Role.AUDITOR, Role.COORDINATOR}),
        ({"roles": "auditor researcher"}, {Role.AUDITOR, Role.RESEARCHER}),
        ({"roles": ["superuser", 7]}, set()),
        ({}, set()),
    ],
)
def test_roles_come_from_the_roles_claim(
    oidc: OidcSettings, claims: dict[str, object], roles: set[Role]
) -> None:
    caller = BearerAuth.from_settings(oidc).authenticate(f"Bearer {_token(**claims)}")
    assert caller.roles == roles
    assert caller.via_jwt


@pytest.mark.parametrize(
    ("header", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("Basic abc", 401, "unauthorized"),
        ("Bearer nope", 401, "invalid-token"),
        ("Bearer " + _token(exp=int(time.time()) - 100), 401, "token-expired"),
        ("Bearer " + _token(aud="other"), 401, "wrong-audience"),
        ("Bearer " + _token(iss="https://other"), 401, "wrong-issuer"),
        ("Bearer " + _token(roles=["auditor"]), 403, "forbidden"),
    ],
)
def test_refusals_carry_status_and_code_only(
    oidc: OidcSettings, header: str | None, status: int, code: str
) -> None:
    auth = BearerAuth.from_settings(oidc)
    with pytest.raises(AuthRefusedError) as info:
        auth.authorize(header, {Role.CONSENT_ADMIN})
    assert (info.value.status, info.value.code) == (status, code)
    assert "u1" not in str(info.value)
    assert "https://idp" not in info.value.detail


def test_static_tokens_carry_their_configured_caller(oidc: OidcSettings) -> None:
    static = StaticToken(SecretStr("tok-1"), Caller("alice", frozenset({Role.CONSENT_ADMIN})))
    auth = BearerAuth.from_settings(oidc, [static])
    assert auth.authorize("Bearer tok-1", {Role.CONSENT_ADMIN}).name == "alice"
    with pytest.raises(AuthRefusedError):
        auth.authorize("Bearer tok-2", {Role.CONSENT_ADMIN})
