"""The inbox's pure parts, no broker: password hashes, signed sessions, CSRF and the alert fold."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from caremesh.connectors.inbox.auth import (
    csrf_ok,
    csrf_token,
    decode_session,
    encode_session,
    hash_password,
    new_session,
    parse_password_hash,
    verify_password,
)
from caremesh.connectors.inbox.sessions import SessionBook
from caremesh.connectors.inbox.state import InboxState, read_alert
from caremesh.errors import ConfigurationError, RejectedInputError
from caremesh.pathways.alert import CoordinatorAction, make_action
from caremesh.settings import CoordinatorSettings, InboxSettings
from tests.integration.inbox.support import alert

SECRET = b"k" * 32


def test_a_password_verifies_against_its_own_hash_only() -> None:
    stored = parse_password_hash(hash_password("correct horse", log2_n=8))
    assert verify_password("correct horse", stored)
    assert not verify_password("correct horse ", stored)
    assert hash_password("same", log2_n=8) != hash_password("same", log2_n=8)  # salted


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain-password",
        "pbkdf2$1$2$3$abc$def",
        "scrypt$14$8$1$c2FsdA$",  # empty digest
        "scrypt$40$8$1$c2FsdA$" + "A" * 43,  # n too large
        "scrypt$x$8$1$c2FsdA$" + "A" * 43,
        "scrypt$14$8$1$$" + "A" * 43,  # no salt
    ],
)
def test_malformed_password_hashes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="password hash"):
        parse_password_hash(text)


def test_a_session_round_trips_and_expires() -> None:
    session = new_session("alice", now=1000.0, lifetime_seconds=60)
    token = encode_session(session, SECRET)
    assert decode_session(token, SECRET, now=1030.0) == session
    assert decode_session(token, SECRET, now=1061.0) is None
    assert decode_session(token, b"x" * 32, now=1030.0) is None
    assert decode_session(None, SECRET, now=1030.0) is None


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), char=st.sampled_from("AQgw_-.xé"))
def test_any_altered_session_cookie_is_refused(position: int, char: str) -> None:
    token = encode_session(new_session("alice", 0.0, 3600), SECRET)
    index = position % len(token)
    altered = token[:index] + char + token[index + 1 :]
    if altered != token:
        assert decode_session(altered, SECRET, now=10.0) is None


def test_a_csrf_token_is_bound_to_its_session() -> None:
    token = csrf_token(SECRET, "nonce-1")
    assert csrf_ok(SECRET, "nonce-1", token)
    assert not csrf_ok(SECRET, "nonce-2", token)
    assert not csrf_ok(SECRET, "nonce-1", None)
    assert not csrf_ok(SECRET, None, token)


def _inbox_settings(**changes: Any) -> InboxSettings:
    base: dict[str, Any] = {
        "session_secret": SecretStr("s" * 40),
        "coordinators": [
            CoordinatorSettings(
                username="alice",
                password_hash=SecretStr(hash_password("pw-a", log2_n=8)),
                organisation="org-a",
            )
        ],
    }
    base.update(changes)
    return InboxSettings(**base)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"session_secret": None}, "SESSION_SECRET is required"),
        ({"session_secret": SecretStr("short")}, "at least 32"),
        (
            {
                "coordinators": [
                    CoordinatorSettings(
                        username="alice",
                        password_hash=SecretStr("hunter2"),
                        organisation="org-a",
                    )
                ]
            },
            r"coordinators\[0\].password_hash",
        ),
    ],
)
def test_bad_inbox_configuration_is_refused_without_values(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message) as caught:
        SessionBook.from_settings(_inbox_settings(**changes))
    assert "hunter2" not in str(caught.value)
    assert "short" not in str(caught.value)


def test_the_session_book_signs_in_checks_and_signs_out() -> None:
    book = SessionBook.from_settings(_inbox_settings())
    assert book.authenticate("alice", "wrong") is None
    assert book.authenticate("nobody", "pw-a") is None
    alice = book.authenticate("alice", "pw-a")
    assert alice is not None
    token = book.open(alice, now=100.0)
    signed = book.check(token, now=101.0)
    assert signed is not None
    assert signed.coordinator.organisation == "org-a"
    book.revoke(token, now=102.0)
    assert book.check(token, now=103.0) is None
    assert not book.still_valid(signed, now=103.0)


# --- the fold -------------------------------------------------------------------------------


def _action(alert_id: str, kind: str = "ack", who: str = "alice") -> CoordinatorAction:
    return make_action(
        kind,  # type: ignore[arg-type]
        alert_id=alert_id,
        pathway_id="heart-failure",
        coordinator=who,
        at=datetime(2025, 3, 4, 9, 30, tzinfo=UTC),
        note=f"by {who}",
    )


def test_an_alert_is_read_from_the_communication_the_stage_builds() -> None:
    alert_id, communication = alert("org-a", "2850675123456", severity="critical")
    read = read_alert("2850675123456", communication)
    assert (read.alert_id, read.organisation, read.pathway_id) == (
        alert_id,
        "org-a",
        "heart-failure",
    )
    assert (read.rule_id, read.severity, read.status) == ("weight-gain-3d", "critical", "open")
    assert read.title == "Weight gain over 2 kg in 3 days"


def _without(path: tuple[str, ...]) -> Any:
    def change(c: dict[str, Any]) -> None:
        target = c
        for part in path[:-1]:
            target = target[part]
        target.pop(path[-1])

    return change


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(resourceType="Flag"),
        lambda c: c.update(id="not-a-uuid"),
        lambda c: c.update(recipient=[{"reference": "Practitioner/p1"}]),
        _without(("recipient",)),
        lambda c: c["meta"].update(tag=[]),
        lambda c: c["meta"]["tag"][2].update(code="urgent"),
    ],
)
def test_records_that_are_not_alerts_are_refused_by_code(change: Any) -> None:
    _, communication = alert("org-a", "2850675123456")
    bad = copy.deepcopy(communication)
    change(bad)
    with pytest.raises(RejectedInputError) as caught:
        read_alert("2850675123456", bad)
    assert caught.value.code == "invalid-alert"
    assert "2850675123456" not in str(caught.value)


def test_the_fold_keeps_one_alert_per_id_and_the_first_closing_action() -> None:
    state = InboxState()
    alert_id, communication = alert("org-a", "p1")
    first = read_alert("p1", communication)
    assert state.add_alert(first) is not None
    assert state.add_alert(first) is None
    assert len(state) == 1
    assert state.apply_action(_action(alert_id, "note")) is None
    closed = state.apply_action(_action(alert_id, "ack", "alice"))
    assert closed is not None
    assert closed.status == "closed"
    assert state.apply_action(_action(alert_id, "dismiss", "bob")) is None
    assert state.add_alert(first) is None  # a replayed alert does not reopen it
    kept = state.get(alert_id, "org-a")
    assert kept is not None
    assert kept.closure is not None
    assert kept.closure.coordinator == "alice"
    assert state.get(alert_id, "org-b") is None
    assert state.select("org-b") == []


@settings(max_examples=100, deadline=None)
@given(order=st.permutations(list(range(6))))
def test_the_first_closing_action_wins_however_alerts_and_actions_interleave(
    order: list[int],
) -> None:
    alerts = [alert("org-a" if i % 2 else "org-b", f"p{i}") for i in range(3)]
    events: list[Any] = [read_alert(f"p{i}", c) for i, (_, c) in enumerate(alerts)]
    events += [_action(alerts[0][0], "ack"), _action(alerts[1][0], "dismiss")]
    events += [_action(alerts[0][0], "dismiss", "bob")]  # later: loses against the first ack
    state = InboxState()
    for index in order:
        event = events[index]
        if isinstance(event, CoordinatorAction):
            state.apply_action(event)
        else:
            state.add_alert(event)
    statuses = {
        a.alert_id: (a.status, a.closure and a.closure.action)
        for org in ("org-a", "org-b")
        for a in state.select(org)
    }
    expected_first = "ack" if order.index(3) < order.index(5) else "dismiss"
    assert statuses == {
        alerts[0][0]: ("closed", expected_first),
        alerts[1][0]: ("closed", "dismiss"),
        alerts[2][0]: ("open", None),
    }
