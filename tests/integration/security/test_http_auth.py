"""Every authenticated HTTP route, tried with no token, expired, wrong audience, wrong role, valid.

Real uvicorn servers of the ingest API, the consent API and the inbox's JSON API on the shared
broker (a topic namespace of their own); the inbox's coordinators are scoped to the organisation
of the token's `org` claim exactly as signed-in sessions are. JWTs are signed in the test by an
RSA key published in a JWKS file (RS256, with a `kid`) and an EC P-256 key given as a PEM file
(ES256, no `kid`). Static tokens keep working.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import SecretStr

from caremesh import topics
from caremesh.connectors import consent_api, http_ingest
from caremesh.connectors.inbox import app as inbox
from caremesh.kafka.io import AsyncProducer
from caremesh.metrics import Metrics
from caremesh.settings import InboxSettings, OidcSettings, Settings, SourceSettings
from caremesh.tables.consent_ledger import ConsentLedger
from tests.integration.consent.servers import serve
from tests.integration.inbox.support import COORDINATORS, SECRET, alert, produce_alerts
from tests.support.kafka import make_namespace
from tests.support.settings import evolve
from tests.unit.consent.consent_builders import INS, provision, r4_consent

pytestmark = pytest.mark.kafka

ISSUER = "https://idp.caremesh.test"
AUDIENCE = "caremesh-apis"
SOURCE_TOKEN = "static-source-token-0001"
ADMIN_TOKEN = "static-admin-token-00001"
PATIENT = "2990175123456"


@dataclass
class Keys:
    rsa: rsa.RSAPrivateKey
    ec: ec.EllipticCurvePrivateKey
    oidc: OidcSettings

    def token(
        self,
        roles: list[str],
        *,
        exp: float = 300,
        aud: str = AUDIENCE,
        signer: str = "rsa",
        **claims: Any,
    ) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": aud, "sub": "user-1", "iat": now, "exp": now + exp}
        body.update(roles=roles, **claims)
        if signer == "rsa":
            return jwt.encode(body, self.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
        return jwt.encode(body, self.ec, algorithm="ES256")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("oidc")
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="rsa-1", use="sig", alg="RS256")
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    pem = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (folder / "ec.pem").write_bytes(pem)
    oidc = OidcSettings(
        issuer=ISSUER,
        audience=AUDIENCE,
        jwks_file=folder / "jwks.json",
        public_key_files=[Path(folder / "ec.pem")],
        leeway_seconds=0,
        organisation_claim="org",
    )
    return Keys(rsa_key, ec_key, oidc)


@dataclass
class Servers:
    ingest: str
    consent: str
    inbox: str


OTHER_PATIENT = "1840275999888"
ALERT_A, COMMUNICATION_A = alert("org-a", PATIENT)
ALERT_B, COMMUNICATION_B = alert("org-b", OTHER_PATIENT)


@pytest.fixture(scope="module")
def servers(kafka: str, keys: Keys) -> Iterator[Servers]:
    with make_namespace(kafka, partitions=1) as ns:
        settings = Settings()
        settings = evolve(
            settings,
            kafka__bootstrap_servers=kafka,
            kafka__topic_prefix=ns.prefix,
            kafka__partitions=1,
            oidc=keys.oidc,
            sources=[SourceSettings(id="hosp-a", token=SecretStr(SOURCE_TOKEN))],
            consent_api__admins={"alice": SecretStr(ADMIN_TOKEN)},
            inbox=InboxSettings.model_validate(
                {"session_secret": SECRET, "coordinators": COORDINATORS}
            ),
        )
        produce_alerts(ns, [(PATIENT, COMMUNICATION_A), (OTHER_PATIENT, COMMUNICATION_B)])
        producer = AsyncProducer(settings.kafka)
        ledger = ConsentLedger(settings.kafka, ns.topic(topics.CONSENT_EVENTS))
        ingest_app = http_ingest.create_app(settings, producer, Metrics())
        consent_app = consent_api.create_app(settings, producer, ledger, Metrics())
        inbox_app = inbox.create_app(settings, producer, Metrics())
        with (
            serve(ingest_app) as ingest_url,
            serve(consent_app) as consent_url,
            serve(inbox_app) as inbox_url,  # type: ignore[arg-type]
        ):
            deadline = time.monotonic() + 60
            while httpx.get(inbox_url + "/health", timeout=5).status_code != 200:
                assert time.monotonic() < deadline, "the inbox never read its topics"
                time.sleep(0.2)
            created = httpx.post(
                consent_url + "/Consent",
                content=orjson.dumps(_consent("c-auth")),
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            assert created.status_code == 201, created.text
            yield Servers(ingest_url, consent_url, inbox_url)
        producer.close(timeout=10)


def _consent(cid: str) -> dict[str, Any]:
    consent = r4_consent(cid, provision("permit", purposes=["TREAT"]))
    consent["patient"] = {"identifier": {"system": INS, "value": PATIENT}}
    return consent


OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
    "subject": {"identifier": {"system": INS, "value": PATIENT}},
}
BUNDLE = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": OBSERVATION}]}


@dataclass(frozen=True)
class Route:
    name: str
    server: str
    method: str
    path: str
    body: dict[str, Any] | None
    role: str
    other_role: str
    ok: int
    claims: tuple[tuple[str, str], ...] = ()
    media: str = "application/fhir+json"


ROUTES = [
    Route("ingest-resource", "ingest", "POST", "/fhir/Observation", OBSERVATION,
          "source-system", "consent-admin", 202, (("source", "hosp-a"),)),
    Route("ingest-bundle", "ingest", "POST", "/fhir", BUNDLE,
          "source-system", "researcher", 202, (("source", "hosp-a"),)),
    Route("consent-create", "consent", "POST", "/Consent", _consent("c-new"),
          "consent-admin", "auditor", 201),
    Route("consent-update", "consent", "PUT", "/Consent/c-auth", _consent("c-auth"),
          "consent-admin", "coordinator", 200),
    Route("consent-withdraw", "consent", "POST", "/Consent/c-auth/$withdraw",
          {"patient": PATIENT, "purpose": "ETREAT"}, "consent-admin", "source-system", 200),
    Route("consent-erase", "consent", "POST", "/Patient/$erase", {"patient": "1840275999888"},
          "consent-admin", "auditor", 200),
    Route("consent-list", "consent", "GET", f"/Consent?patient={PATIENT}", None,
          "auditor", "coordinator", 200),
    Route("consent-decide", "consent", "GET",
          f"/decision?patient={PATIENT}&purpose=TREAT&actor=Organization/org-a", None,
          "coordinator", "researcher", 200),
    Route("inbox-list", "inbox", "GET", "/api/alerts", None,
          "coordinator", "auditor", 200, (("org", "org-a"),), "application/json"),
    Route("inbox-ack", "inbox", "POST", f"/api/alerts/{ALERT_A}/ack", {"note": None},
          "coordinator", "consent-admin", 202, (("org", "org-a"),), "application/json"),
]  # fmt: skip

CASES = ["no-token", "expired", "wrong-audience", "other-role", "valid"]


def _call(servers: Servers, route: Route, token: str | None) -> httpx.Response:
    headers = {"Content-Type": route.media}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    base = getattr(servers, route.server)
    body = orjson.dumps(route.body) if route.body is not None else None
    return httpx.request(route.method, base + route.path, content=body, headers=headers, timeout=30)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_each_route_answers_each_kind_of_caller(
    servers: Servers, keys: Keys, route: Route, case: str
) -> None:
    claims = dict(route.claims)
    token = {
        "no-token": None,
        "expired": keys.token([route.role], exp=-60, **claims),
        "wrong-audience": keys.token([route.role], aud="another-api", **claims),
        "other-role": keys.token([route.other_role], **claims),
        "valid": keys.token([route.role], **claims),
    }[case]
    expected = {"other-role": 403, "valid": route.ok}.get(case, 401)
    answer = _call(servers, route, token)
    assert answer.status_code == expected, answer.text
    if expected == 401:
        assert answer.headers["www-authenticate"].startswith("Bearer")
    if expected >= 400 and route.server == "inbox":
        assert answer.json()["error"]  # the inbox's JSON errors: a code, never a value
    elif expected >= 400:
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_a_coordinator_token_sees_and_acts_on_its_own_organisation_only(
    servers: Servers, keys: Keys
) -> None:
    def get(token: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(servers.inbox + "/api/alerts", headers=headers, timeout=30)

    bob = keys.token(["coordinator"], org="org-b")
    listed = get(bob)
    assert listed.status_code == 200, listed.text
    assert listed.json()["organisation"] == "org-b"
    assert [a["id"] for a in listed.json()["alerts"]] == [ALERT_B]
    assert PATIENT not in listed.text
    # another organisation's alert does not exist for this coordinator
    other = httpx.post(
        f"{servers.inbox}/api/alerts/{ALERT_A}/dismiss",
        json={"note": None},
        headers={"Authorization": f"Bearer {bob}"},
        timeout=30,
    )
    assert other.status_code == 404, other.text
    # a coordinator token must name an organisation; the claim is the configured one
    assert get(keys.token(["coordinator"])).status_code == 403
    assert get(keys.token(["coordinator"], organisation="org-b")).status_code == 403
    # a session cookie's CSRF rule does not apply to bearer callers, but tokens are checked
    assert get(keys.token(["coordinator"], org="org-b", signer="ec")).status_code == 200


def test_static_tokens_and_es256_tokens_keep_working(servers: Servers, keys: Keys) -> None:
    by_name = {r.name: r for r in ROUTES}
    assert _call(servers, by_name["ingest-resource"], SOURCE_TOKEN).status_code == 202
    assert _call(servers, by_name["consent-list"], ADMIN_TOKEN).status_code == 200
    # a source's static token is no consent administrator's token, and the reverse: the consent
    # API knows a source (it may record its own Consents) but refuses it the listing (403)
    assert _call(servers, by_name["consent-list"], SOURCE_TOKEN).status_code == 403
    assert _call(servers, by_name["ingest-resource"], ADMIN_TOKEN).status_code == 401
    es256 = keys.token(["auditor"], signer="ec")
    assert _call(servers, by_name["consent-list"], es256).status_code == 200
    # a source-system token must name a configured source
    stranger = keys.token(["source-system"], source="not-configured")
    assert _call(servers, by_name["ingest-resource"], stranger).status_code == 403


def test_forged_and_unsigned_tokens_are_refused(servers: Servers, keys: Keys) -> None:
    route = next(r for r in ROUTES if r.name == "consent-list")
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 60, "roles": ["auditor"]}
    forged = jwt.encode(claims, other, algorithm="RS256", headers={"kid": "rsa-1"})
    unsigned = jwt.encode(claims, None, algorithm="none")
    wrong_issuer = jwt.encode({**claims, "iss": "https://evil.test"}, keys.rsa, algorithm="RS256")
    for token in (forged, unsigned, wrong_issuer, "not.a.jwt"):
        assert _call(servers, route, token).status_code == 401
