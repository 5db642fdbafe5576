"""Who may sign in to the inbox, and the sessions they hold (signed cookies, sign-out list).

A session is a signed cookie (see `auth`), valid until it expires, its coordinator leaves the
configuration, or they sign out: signed-out sessions are remembered by nonce until they would
have expired. That list lives in the process; with several inbox replicas, sign-out holds on
the replica that served it, and every session still ends at its expiry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from caremesh.connectors.inbox.auth import (
    DUMMY_HASH,
    PasswordHash,
    decode_session,
    encode_session,
    new_session,
    parse_password_hash,
    verify_password,
)
from caremesh.errors import ConfigurationError
from caremesh.settings import InboxSettings

log = logging.getLogger(__name__)

SESSION_COOKIE: Final = "caremesh_inbox_session"
LOGIN_COOKIE: Final = "caremesh_inbox_login"
MIN_SECRET_CHARS: Final = 32


@dataclass(frozen=True, slots=True)
class Coordinator:
    """A configured coordinator."""

    username: str
    password: PasswordHash
    organisation: str
    display_name: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A valid session: which sign-in, until when, and who."""

    nonce: str
    expires: int
    coordinator: Coordinator


class SessionBook:
    """Coordinators by username, and the sessions signed with one secret."""

    def __init__(
        self, secret: bytes, coordinators: list[Coordinator], lifetime_seconds: float
    ) -> None:
        self.secret = secret
        self.lifetime = lifetime_seconds
        self._by_name = {c.username: c for c in coordinators}
        self._revoked: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: InboxSettings) -> SessionBook:
        """Read the inbox settings; ConfigurationError names the field, never a value."""
        if settings.session_secret is None:
            raise ConfigurationError("CAREMESH_INBOX__SESSION_SECRET is required")
        secret = settings.session_secret.get_secret_value()
        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigurationError(
                f"CAREMESH_INBOX__SESSION_SECRET must have at least {MIN_SECRET_CHARS} characters"
            )
        coordinators = []
        seen: set[str] = set()
        for index, item in enumerate(settings.coordinators):
            if item.username in seen:
                raise ConfigurationError(f"inbox coordinators[{index}]: duplicate username")
            seen.add(item.username)
            try:
                hashed = parse_password_hash(item.password_hash.get_secret_value())
            except ValueError as exc:
                raise ConfigurationError(
                    f"inbox coordinators[{index}].password_hash: {exc}"
                ) from None
            coordinators.append(
                Coordinator(item.username, hashed, item.organisation, item.display_name)
            )
        if not coordinators:
            log.warning("inbox has no coordinators configured: nobody can sign in")
        return cls(secret.encode(), coordinators, settings.session_hours * 3600)

    def authenticate(self, username: str, password: str) -> Coordinator | None:
        """The coordinator whose password this is, or None (same work for unknown names)."""
        found = self._by_name.get(username)
        ok = verify_password(password, found.password if found else DUMMY_HASH)
        return found if ok and found is not None else None

    def open(self, coordinator: Coordinator, now: float) -> str:
        """A new session's cookie value."""
        return encode_session(new_session(coordinator.username, now, self.lifetime), self.secret)

    def check(self, token: str | None, now: float) -> SignedIn | None:
        """The session of a cookie value if it is valid, else None."""
        session = decode_session(token, self.secret, now)
        if session is None or session.nonce in self._revoked:
            return None
        found = self._by_name.get(session.username)
        return SignedIn(session.nonce, session.expires, found) if found is not None else None

    def still_valid(self, signed: SignedIn, now: float) -> bool:
        """Whether a session checked earlier has neither expired nor been signed out since."""
        return signed.expires > now and signed.nonce not in self._revoked

    def revoke(self, token: str | None, now: float) -> None:
        """Sign a session out; forget sign-outs whose sessions have expired anyway."""
        session = decode_session(token, self.secret, now)
        self._revoked = {n: exp for n, exp in self._revoked.items() if exp > now}
        if session is not None:
            self._revoked[session.nonce] = session.expires
