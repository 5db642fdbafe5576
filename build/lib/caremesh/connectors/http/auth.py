"""Who calls an HTTP API, and in which role: static bearer tokens and OAuth2/OIDC JWTs (DESIGN §9).

A request carries `Authorization: Bearer <token>`. The token is either

- a static token of the configuration (a source system's token, a consent administrator's
  token), compared in constant time with every configured token; it carries the role the
  configuration gives it; or
- a JWT (RFC 7519) signed with RS256 or ES256 by the configured issuer, verified against its
  JSON Web Key Set (`oidc.jwks_file`, key chosen by `kid`) or its PEM public keys, with `exp`,
  `iss` and `aud` required and checked (`oidc.leeway_seconds` of clock skew). Its roles are the
  values of `oidc.roles_claim` (a list, or a space-separated string as in OAuth2 `scope`).

Each route names the roles it admits (`ROUTE_ROLES`); a missing, malformed, forged, expired or
wrong-audience token is 401, a valid token without an admitted role is 403. Refusals name a
code only, never the token, a claim value or the reason PyJWT gave.
"""

from __future__ import annotations

import enum
import hmac
import json
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import SecretStr

from caremesh.errors import AuthRefusedError, ConfigurationError
from caremesh.settings import OidcSettings

log = logging.getLogger(__name__)


class Role(enum.StrEnum):
    """The roles of DESIGN §9, as they appear in a token's roles claim."""

    SOURCE_SYSTEM = "source-system"
    COORDINATOR = "coordinator"
    CONSENT_ADMIN = "consent-admin"
    AUDITOR = "auditor"
    RESEARCHER = "researcher"


ROUTE_ROLES: Final[Mapping[str, frozenset[Role]]] = {
    "ingest:post": frozenset({Role.SOURCE_SYSTEM}),
    "consent:write": frozenset({Role.CONSENT_ADMIN}),
    "consent:record": frozenset({Role.CONSENT_ADMIN, Role.SOURCE_SYSTEM}),
    "consent:read": frozenset({Role.CONSENT_ADMIN, Role.AUDITOR}),
    "consent:decide": frozenset({Role.CONSENT_ADMIN, Role.AUDITOR, Role.COORDINATOR}),
    "inbox:api": frozenset({Role.COORDINATOR}),
}
"""The roles each kind of route admits (documented in docs/operators/security.md)."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its name (token holder or JWT `sub`), roles and attributes."""

    name: str
    roles: frozenset[Role]
    source: str | None = None
    """The source id of a source system (static source token, or the JWT's source claim)."""
    organisation: str | None = None
    """The organisation id of a coordinator (the JWT's organisation claim)."""
    expires: float | None = None
    """`exp` of a JWT (epoch seconds); None for a static token."""
    via_jwt: bool = False


NO_TOKEN = AuthRefusedError(401, "unauthorized", "a valid bearer token is required")


@dataclass(frozen=True, slots=True)
class StaticToken:
    """A configured static token and what it stands for."""

    secret: SecretStr
    caller: Caller


def _key_algorithm(key: Any) -> str | None:
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256"
    return None


@dataclass
class JwtVerifier:
    """Verifies JWTs of one issuer and audience against its public keys."""

    issuer: str
    audience: str
    algorithms: list[str]
    roles_claim: str = "roles"
    source_claim: str = "source"
    organisation_claim: str = "organisation"
    leeway: float = 30.0
    by_kid: dict[str, tuple[Any, str]] = field(default_factory=dict)
    """kid → (public key, its algorithm)."""
    unnamed: list[tuple[Any, str]] = field(default_factory=list)
    """Keys without a kid (PEM files), tried in turn for tokens without a kid."""

    @classmethod
    def from_settings(cls, oidc: OidcSettings) -> JwtVerifier | None:
        """The verifier of the configured issuer, or None when JWTs are not configured."""
        if oidc.issuer is None:
            return None
        if not oidc.audience:
            raise ConfigurationError("CAREMESH_OIDC__AUDIENCE is required with an issuer")
        verifier = cls(
            oidc.issuer,
            oidc.audience,
            list(oidc.algorithms),
            oidc.roles_claim,
            oidc.source_claim,
            oidc.organisation_claim,
            oidc.leeway_seconds,
        )
        if oidc.jwks_file is not None:
            try:
                document = json.loads(oidc.jwks_file.read_text())
                keyset = jwt.PyJWKSet.from_dict(document)
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigurationError("CAREMESH_OIDC__JWKS_FILE is not a readable JWKS") from exc
            for jwk in keyset.keys:
                verifier._add(jwk.key, jwk.key_id)
        for path in oidc.public_key_files:
            try:
                key = load_pem_public_key(path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ConfigurationError(f"public key file {path.name} is not a PEM key") from exc
            verifier._add(key, None)
        if not verifier.by_kid and not verifier.unnamed:
            raise ConfigurationError("an OIDC issuer needs a JWKS file or PEM public keys")
        return verifier

    def _add(self, key: Any, kid: str | None) -> None:
        algorithm = _key_algorithm(key)
        if algorithm is None or algorithm not in self.algorithms:
            raise ConfigurationError("an OIDC key is neither RSA nor EC P-256 of an allowed alg")
        if kid:
            self.by_kid[kid] = (key, algorithm)
        else:
            self.unnamed.append((key, algorithm))

    def _candidates(self, token: str) -> list[tuple[Any, str]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthRefusedError(401, "invalid-token", "the bearer token is not valid") from None
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self.by_kid:
            return [self.by_kid[kid]]
        if kid is None:
            return list(self.unnamed) or list(self.by_kid.values())
        return []

    def verify(self, token: str) -> Caller:
        """The caller of a valid token; AuthRefusedError(401) otherwise."""
        code = "invalid-token"
        for key, algorithm in self._candidates(token):
            try:
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=self.audience,
                    issuer=self.issuer,
                    leeway=self.leeway,
                    options={"require": ["exp", "iss", "aud", "sub"]},
                )
            except jwt.ExpiredSignatureError:
                code = "token-expired"
                break
            except jwt.InvalidAudienceError:
                code = "wrong-audience"
                break
            except jwt.InvalidIssuerError:
                code = "wrong-issuer"
                break
            except jwt.PyJWTError:
                continue
            return self._caller(claims)
        raise AuthRefusedError(401, code, "the bearer token is not valid")

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        raw = claims.get(self.roles_claim, ())
        values: Iterable[object] = raw.split() if isinstance(raw, str) else raw
        if not isinstance(values, list | tuple):
            values = ()
        roles = frozenset(
            Role(v) for v in values if isinstance(v, str) and v in Role._value2member_map_
        )
        source = claims.get(self.source_claim)
        org = claims.get(self.organisation_claim)
        exp = claims.get("exp")
        return Caller(
            name=str(claims["sub"]),
            roles=roles,
            source=source if isinstance(source, str) else None,
            organisation=org if isinstance(org, str) else None,
            expires=float(exp) if isinstance(exp, int | float) else None,
            via_jwt=True,
        )


class BearerAuth:
    """Static tokens and JWTs of one HTTP API: `authorize(header, roles)` → Caller or refusal."""

    def __init__(self, static: Iterable[StaticToken], verifier: JwtVerifier | None) -> None:
        self._static = [(t.secret.get_secret_value().encode(), t.caller) for t in static]
        self.verifier = verifier

    @classmethod
    def from_settings(cls, oidc: OidcSettings, static: Iterable[StaticToken] = ()) -> BearerAuth:
        return cls(static, JwtVerifier.from_settings(oidc))

    def __len__(self) -> int:
        return len(self._static) + (1 if self.verifier is not None else 0)

    def authenticate(self, authorization: str | None) -> Caller:
        """The caller of the `Authorization` header; AuthRefusedError(401) when there is none."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise NO_TOKEN
        given = token.encode()
        found: Caller | None = None
        for expected, caller in self._static:  # compare with every token: timing tells nothing
            if hmac.compare_digest(given, expected) and found is None:
                found = caller
        if found is not None:
            return found
        if self.verifier is not None and token.count(".") == 2:
            return self.verifier.verify(token)
        raise AuthRefusedError(401, "invalid-token", "the bearer token is not valid")

    def authorize(self, authorization: str | None, roles: Collection[Role]) -> Caller:
        """The caller, if it holds one of `roles`; 401 without a valid token, 403 without role."""
        caller = self.authenticate(authorization)
        if not caller.roles & frozenset(roles):
            raise AuthRefusedError(403, "forbidden", "the caller's role may not use this route")
        return caller
