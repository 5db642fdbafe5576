"""The inbox process against the real broker: scoping by organisation, sign-in, ack, restarts,
duplicates and the live event stream."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from caremesh.pathways.alert import parse_action
from tests.integration.inbox.support import (
    alert,
    eventually,
    listed,
    login,
    post_action,
    produce_alerts,
    start_inbox,
)
from tests.support.kafka import Namespace, Proc

pytestmark = pytest.mark.kafka

PATIENT_A1 = "2850675123456"
PATIENT_A2 = "hosp-a/Patient/p-17"
PATIENT_B1 = "1720133987654"


def _ids(alerts: list[dict[str, Any]]) -> set[str]:
    return {a["id"] for a in alerts}


def test_a_coordinator_sees_only_their_organisations_alerts_and_can_filter(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    a1, c1 = alert("org-a", PATIENT_A1, severity="high")
    a2, c2 = alert("org-a", PATIENT_A2, pathway="copd", rule="low-spo2", severity="medium")
    b1, cb = alert("org-b", PATIENT_B1, severity="high")
    produce_alerts(namespace, [(PATIENT_A1, c1), (PATIENT_A2, c2), (PATIENT_B1, cb)])
    inbox = start_inbox(spawn, namespace)
    alice, alice_csrf = login(inbox.url, "alice")
    bob, _ = login(inbox.url, "bob")

    mine = listed(alice)
    assert _ids(mine) == {a1, a2}
    assert {a["patient"] for a in mine} == {PATIENT_A1, PATIENT_A2}
    assert _ids(listed(bob)) == {b1}
    assert PATIENT_A1 not in bob.get("/api/alerts").text

    assert _ids(listed(alice, severity="high")) == {a1}
    assert _ids(listed(alice, pathway="copd")) == {a2}
    assert _ids(listed(alice, status="open")) == {a1, a2}
    assert listed(alice, status="closed") == []
    assert alice.get("/api/alerts", params={"severity": "urgent"}).status_code == 400
    assert alice.get("/api/alerts").json()["pathways"] == ["copd", "heart-failure"]

    # Another organisation's alert cannot be acted on, and nothing is written.
    refused = post_action(alice, alice_csrf, b1, "ack", "not mine")
    assert refused.status_code == 404
    assert _ids(listed(bob, status="open")) == {b1}
    assert namespace.consume_all("pathway.actions.v1", settle=2) == []


def test_without_a_session_the_api_refuses_and_the_page_sends_to_sign_in(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    a1, c1 = alert("org-a", PATIENT_A1)
    produce_alerts(namespace, [(PATIENT_A1, c1)])
    inbox = start_inbox(spawn, namespace)
    anonymous = httpx.Client(base_url=inbox.url, timeout=10)

    assert anonymous.get("/api/alerts").status_code == 401
    assert anonymous.get("/api/alerts/stream").status_code == 401
    assert anonymous.post(f"/api/alerts/{a1}/ack", json={"note": None}).status_code == 401
    page = anonymous.get("/")
    assert (page.status_code, page.headers["location"]) == (303, "/login")
    assert anonymous.get("/health").json() == {"status": "ok", "ready": True}
    metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200
    assert 'caremesh_messages_in_total{component="inbox"} 1.0' in metrics.text
    assert PATIENT_A1 not in metrics.text
    assert a1 not in metrics.text
    login_page = anonymous.get("/login")
    assert "script-src 'self'" in login_page.headers["content-security-policy"]
    assert login_page.headers["x-frame-options"] == "DENY"

    # A forged cookie and a wrong password do not sign anyone in.
    forged = httpx.Client(
        base_url=inbox.url, cookies={"caremesh_inbox_session": "eyJ1IjoiYWxpY2UifQ.AAAA"}
    )
    assert forged.get("/api/alerts").status_code == 401
    form = anonymous.get("/login").text
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    wrong = anonymous.post("/login", data={"username": "alice", "password": "guess", "csrf": csrf})
    assert wrong.status_code == 401
    assert "caremesh_inbox_session" not in wrong.cookies
    no_csrf = httpx.Client(base_url=inbox.url).post(
        "/login", data={"username": "alice", "password": "alice-pass-1"}
    )
    assert no_csrf.status_code == 403

    # Signed in, a POST without the page's CSRF token is refused; after sign-out, 401 again.
    alice, csrf_token = login(inbox.url, "alice")
    cookie = alice.cookies.get("caremesh_inbox_session")
    assert alice.post(f"/api/alerts/{a1}/ack", json={"note": None}).status_code == 403
    set_cookie = alice.get("/login").headers.get("set-cookie", "")
    assert "caremesh_inbox_session" not in set_cookie  # already signed in: redirected
    logout = alice.post("/logout", data={"csrf": csrf_token})
    assert (logout.status_code, logout.headers["location"]) == (303, "/login")
    replay = httpx.Client(base_url=inbox.url, cookies={"caremesh_inbox_session": cookie or ""})
    assert replay.get("/api/alerts").status_code == 401
    assert listed(login(inbox.url, "alice")[0]) != []
    header = _session_cookie_header(inbox.url)
    assert "httponly" in header.lower()
    assert "samesite=strict" in header.lower()
    assert "secret" not in inbox.proc.log().lower()


def _session_cookie_header(url: str) -> str:
    client = httpx.Client(base_url=url)
    form = client.get("/login").text
    csrf = form.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    answer = client.post(
        "/login", data={"username": "alice", "password": "alice-pass-1", "csrf": csrf}
    )
    return next(
        v for v in answer.headers.get_list("set-cookie") if v.startswith("caremesh_inbox_session=")
    )


def test_ack_writes_an_action_and_an_audit_event_and_stays_closed_after_a_restart(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    a1, c1 = alert("org-a", PATIENT_A2)
    a2, c2 = alert("org-a", PATIENT_A1, severity="critical")
    produce_alerts(namespace, [(PATIENT_A2, c1), (PATIENT_A1, c2)])
    inbox = start_inbox(spawn, namespace)
    alice, csrf = login(inbox.url, "alice")

    answer = post_action(alice, csrf, a1, "ack", "Called the patient, GP visit tomorrow")
    assert answer.status_code == 202, answer.text
    closed = answer.json()["alert"]
    assert closed["status"] == "closed"
    assert closed["closed"]["action"] == "ack"
    assert post_action(alice, csrf, a1, "dismiss", None).status_code == 409
    assert _ids(listed(alice, status="closed")) == {a1}
    assert _ids(listed(alice, status="open")) == {a2}

    actions = namespace.consume("pathway.actions.v1", 1)
    assert len(actions) == 1
    assert actions[0].key() == PATIENT_A2.encode()
    action = parse_action(actions[0].value() or b"")
    assert (action.action, action.alert_id, action.pathway_id) == ("ack", a1, "heart-failure")
    assert (action.coordinator, action.organization) == ("alice", "Organization/org-a")
    assert action.note == "Called the patient, GP visit tomorrow"

    # audit.v1 also holds the consent decisions behind the cards' patient context.
    audits = [
        record
        for record in namespace.consume_all("audit.v1", settle=2)
        if "subtype" not in orjson.loads(record.value() or b"")  # the action's has none
    ]
    assert len(audits) == 1
    event = orjson.loads(audits[0].value() or b"")
    assert audits[0].key() == event["id"].encode()
    from fhir.resources.R4B.auditevent import AuditEvent

    AuditEvent.model_validate(event)  # a valid FHIR R4 AuditEvent
    refs = [e["what"].get("reference") for e in event["entity"]]
    assert f"Communication/{a1}" in refs
    assert event["agent"][0]["who"]["identifier"]["value"] == "alice"
    assert "Called the patient" not in (audits[0].value() or b"").decode()

    # A new process folds both topics from the beginning: the acked alert is still closed.
    inbox.proc.process.terminate()
    inbox.proc.process.wait(timeout=30)
    again = start_inbox(spawn, namespace)
    alice2, csrf2 = login(again.url, "alice")
    after = {a["id"]: a for a in listed(alice2)}
    assert after[a1]["status"] == "closed"
    assert after[a1]["closed"]["note"] == "Called the patient, GP visit tomorrow"
    assert after[a2]["status"] == "open"
    assert post_action(alice2, csrf2, a1, "ack", None).status_code == 409
    assert PATIENT_A2 not in inbox.proc.log() + again.proc.log()


def test_the_same_alert_delivered_twice_is_shown_once(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    a1, c1 = alert("org-a", PATIENT_A1)
    produce_alerts(namespace, [(PATIENT_A1, c1), (PATIENT_A1, c1)])
    inbox = start_inbox(spawn, namespace)
    alice, _ = login(inbox.url, "alice")
    assert [a["id"] for a in listed(alice)] == [a1]

    produce_alerts(namespace, [(PATIENT_A1, c1)])  # a replay after start-up, too
    a2, c2 = alert("org-a", PATIENT_A1, rule="readmission-30d")
    produce_alerts(namespace, [(PATIENT_A1, c2)])
    eventually(lambda: len(listed(alice)) == 2)
    assert sorted(a["id"] for a in listed(alice)) == sorted([a1, a2])


def _read_stream(
    url: str, cookies: httpx.Cookies, out: queue.Queue[str], stop: threading.Event
) -> None:
    with (
        httpx.Client(base_url=url, cookies=cookies, timeout=httpx.Timeout(5, read=30)) as client,
        client.stream("GET", "/api/alerts/stream") as answer,
    ):
        out.put(f"status {answer.status_code} {answer.headers.get('content-type')}")
        for line in answer.iter_lines():
            out.put(line)
            if stop.is_set():
                return


def test_the_event_stream_delivers_new_alerts_of_the_organisation_only(
    namespace: Namespace, spawn: Callable[..., Proc]
) -> None:
    inbox = start_inbox(spawn, namespace, keepalive=1.0)
    alice, csrf = login(inbox.url, "alice")
    lines: queue.Queue[str] = queue.Queue()
    stop = threading.Event()
    reader = threading.Thread(
        target=_read_stream, args=(inbox.url, alice.cookies, lines, stop), daemon=True
    )
    reader.start()
    first = lines.get(timeout=10)
    assert first.startswith("status 200 text/event-stream")

    b1, cb = alert("org-b", PATIENT_B1)
    a1, ca = alert("org-a", PATIENT_A1, severity="critical")
    produced = time.monotonic()
    produce_alerts(namespace, [(PATIENT_B1, cb), (PATIENT_A1, ca)])
    seen: list[str] = []
    events: list[dict[str, Any]] = []
    while not events and time.monotonic() - produced < 10:
        line = lines.get(timeout=10)
        seen.append(line)
        if line.startswith("data: "):
            events.append(orjson.loads(line[6:]))
    assert [e["id"] for e in events] == [a1], "the new alert did not arrive within 10 s"
    assert events[0]["status"] == "open"
    assert events[0]["patient"] == PATIENT_A1

    # Closing it is pushed too; org B's alert never is; keep-alive comments flow meanwhile.
    assert post_action(alice, csrf, a1, "dismiss", None).status_code == 202
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            seen.append(lines.get(timeout=1))
    stop.set()
    data = [orjson.loads(line[6:]) for line in seen if line.startswith("data: ")]
    assert [(d["id"], d["status"]) for d in data] == [(a1, "open"), (a1, "closed")]
    assert b1 not in "\n".join(seen)
    assert PATIENT_B1 not in "\n".join(seen)
    assert ": keep-alive" in seen
