"""Inbox sign-in: scrypt password hashes, HMAC-signed session tokens and CSRF tokens.

Standard library only (no itsdangerous):

- passwords: `scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>` with `hashlib.scrypt` (RFC 7914),
  a random 16-byte salt and a 32-byte hash; verified in constant time;
- sessions: `<payload b64url>.<HMAC-SHA256(secret, "session." + payload) b64url>` where the
  payload is JSON `{"u": username, "n": nonce, "exp": epoch seconds}`;
- CSRF tokens: HMAC-SHA256(secret, "csrf." + session nonce), so a token is bound to one sign-in
  and needs no server state; the sign-in form uses the same scheme over a pre-session nonce.

Nothing here logs; errors carry no username, password or token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Final

SCRYPT_LOG2_N: Final = 14
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
_SALT_BYTES: Final = 16
_HASH_BYTES: Final = 32
_MAX_LOG2_N: Final = 20


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, *, log2_n: int = SCRYPT_LOG2_N) -> str:
    """A salted scrypt hash of a password, in the `scrypt$...` form the settings take."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = _scrypt(password, salt, log2_n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${log2_n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 1024 * 1024, dklen=32
    )


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """A parsed `scrypt$...` hash."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes


def parse_password_hash(text: str) -> PasswordHash:
    """Read a `scrypt$...` hash; ValueError (naming no part of it) when it is not one."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("password hash is not in the scrypt$... form")
    try:
        log2_n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except (ValueError, binascii.Error):
        raise ValueError("password hash is not in the scrypt$... form") from None
    if not (1 <= log2_n <= _MAX_LOG2_N and 1 <= r <= 32 and 1 <= p <= 16) or not salt:
        raise ValueError("password hash has out-of-range scrypt parameters")
    if len(digest) != _HASH_BYTES:
        raise ValueError("password hash has the wrong length")
    return PasswordHash(log2_n, r, p, salt, digest)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """Whether `password` matches the stored hash (constant-time comparison)."""
    given = _scrypt(password, stored.salt, stored.log2_n, stored.r, stored.p)
    return hmac.compare_digest(given, stored.digest)


DUMMY_HASH: Final = PasswordHash(
    SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P, b"caremesh-no-user", b"\x00" * _HASH_BYTES
)
"""Verified against for unknown usernames, so that timing does not tell which names exist."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in coordinator: who, which sign-in (nonce), until when."""

    username: str
    nonce: str
    expires: int


def _sign(secret: bytes, purpose: str, message: str) -> str:
    return _b64(hmac.new(secret, f"{purpose}.{message}".encode(), hashlib.sha256).digest())


def new_session(username: str, now: float, lifetime_seconds: float) -> Session:
    """A fresh session for a coordinator who just signed in."""
    return Session(username, secrets.token_urlsafe(16), int(now + lifetime_seconds))


def encode_session(session: Session, secret: bytes) -> str:
    """The cookie value of a session."""
    payload = _b64(
        json.dumps(
            {"u": session.username, "n": session.nonce, "exp": session.expires},
            separators=(",", ":"),
        ).encode()
    )
    return f"{payload}.{_sign(secret, 'session', payload)}"


def decode_session(token: str | None, secret: bytes, now: float) -> Session | None:
    """The session of a cookie value, or None if it is missing, forged, malformed or expired."""
    if not token or token.count(".") != 1 or len(token) > 4096:
        return None
    payload, signature = token.split(".")
    if not _same(signature, _sign(secret, "session", payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = Session(str(data["u"]), str(data["n"]), int(data["exp"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    return session if session.expires > now else None


def csrf_token(secret: bytes, nonce: str) -> str:
    """The CSRF token bound to one session (or sign-in form) nonce."""
    return _sign(secret, "csrf", nonce)


def csrf_ok(secret: bytes, nonce: str | None, token: str | None) -> bool:
    """Whether `token` is the CSRF token of `nonce` (constant-time)."""
    if not nonce or not token:
        return False
    return _same(token, csrf_token(secret, nonce))


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


def new_nonce() -> str:
    """A random nonce for the sign-in form's CSRF cookie."""
    return secrets.token_urlsafe(16)
