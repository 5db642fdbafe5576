"""The territory's event stream on a simulated clock: initial load, then clinical activity.

Timeline, in simulated time from `start` over `days`:

- the first tenth is the initial load, one patient after the other: the patient's consents
  (channel `consent`), then a FHIR transaction Bundle of Patient, CareTeam and Conditions
  (`http-bundle`, enrolling the pathway patients);
- the rest is activity, each patient's story drawn from its own seeded generator: heart failure
  weights over a day (a share gaining more than 2 kg) and admissions with readmissions and
  follow-up visits; diabetes HbA1c (a share above 9 %) and glucose (a share under 3.9 mmol/L);
  COPD SpO2 series (a share under 90 % twice within hours); frail patients' emergency visits
  (a share with two) and falls; background GP visits and routine labs; research withdrawals.
  Results and admissions come as HL7 v2 over MLLP (`mllp`), home monitoring and visits as FHIR
  resources over HTTP (`http-resource`).

Clinical times in the payloads are the simulated times, and the pathways stage accepts a
clinical time only within its out-of-order tolerance (24 h) of the arrival time. `demo_clock`
therefore centres the simulated span on the real run: the clinical times stay within
`days / 2` of real time, so keep `days` at 2 or less for alerts to fire.

An event's `due` is its real-time offset from the start of the feed: `(at - start) / speed`.
Stories depend on the seed only; `start` and `speed` only place them in time.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

import orjson

from caremesh.consent.model import ConsentWithdrawn
from caremesh.consent.parse import withdrawal_json
from caremesh.demo import fhir_payloads as fp
from caremesh.demo import hl7_payloads as hp
from caremesh.demo.territory import CONSENT_DESK

if TYPE_CHECKING:
    from caremesh.demo.territory import Patient, Source, Territory

Channel = Literal["http-bundle", "http-resource", "mllp", "consent"]
CHANNELS: Final[tuple[Channel, ...]] = ("http-bundle", "http-resource", "mllp", "consent")
LOAD_SHARE: Final = 0.1
HOUR: Final = 3600.0

WEIGHT: Final = ("29463-7", "Body weight")
SPO2: Final = ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
HBA1C: Final = ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")
GLUCOSE_MOLAR: Final = ("15074-8", "Glucose [Moles/volume] in Blood")
GLUCOSE_MASS: Final = ("2339-0", "Glucose [Mass/volume] in Blood")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing to send: when (simulated and real offset), over which channel, from whom.

    `payload` and `patient` (the patient key, needed by consent calls) are left out of `repr`
    so that an event never ends up in a log line by accident. `kind` is one of `load`,
    `consent-objection`, `consent-research`, `withdraw` (a withdrawal: `consent_id` is set),
    `weight`, `spo2`, `visit`, `followup`, `fall` (FHIR resources), `admit`, `discharge`, `ed`,
    `ed-discharge` (ADT), `hba1c`, `glucose`, `lab` (ORU).
    """

    at: datetime
    due: float
    channel: Channel
    source: str
    kind: str
    payload: bytes = field(repr=False)
    idempotency_key: str
    resource_type: str = ""
    """The `{type}` of `POST /fhir/{type}` for `http-resource`; `Consent` for consents."""
    patient: str = field(default="", repr=False)
    consent_id: str = ""
    """For a `consent-withdrawal`: the id of the consent withdrawn."""


class _Plan(NamedTuple):
    t: float
    patient: int
    seq: int
    kind: str
    args: tuple[float, ...]


def demo_clock(now: datetime, days: float, seconds: float) -> tuple[datetime, float]:
    """(start, speed) that play `days` of simulated time in `seconds`, centred on `now`."""
    if days <= 0 or seconds <= 0:
        raise ValueError("days and seconds must be positive")
    return now - timedelta(days=days / 2), days * 86400.0 / seconds


def territory_events(
    territory: Territory, start: datetime, speed: float, *, days: float = 1.5
) -> Iterator[Event]:
    """Every event of the territory, in simulated-time order (ties: patient, then story order)."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    if speed <= 0 or days <= 0:
        raise ValueError("speed and days must be positive")
    span = days * 86400.0
    count = len(territory.patients)
    plans: list[_Plan] = []
    for patient in territory.patients:
        # synthetic data reproducible from a seed, not a secret: a seeded PRNG is the point
        rng = random.Random(f"caremesh-demo-story:{territory.seed}:{patient.index}")  # noqa: S311
        load_at = LOAD_SHARE * span * patient.index / count
        plans.extend(_story(patient, rng, load_at, LOAD_SHARE * span, span))
    plans.sort()
    sources = {s.id: s for s in territory.sources}
    for plan in plans:
        patient = territory.patients[plan.patient]
        yield _render(plan, patient, sources[patient.source], start, speed)


def _story(patient: Patient, rng: random.Random, load: float, a0: float, a1: float) -> list[_Plan]:
    """The plans of one patient: consents and load at `load`, activity within [a0, a1]."""
    out: list[_Plan] = []

    def add(t: float, kind: str, *args: float) -> None:
        out.append(
            _Plan(min(max(t, a0), a1) if kind != "load" else t, patient.index, len(out), kind, args)
        )

    if patient.objects_to is not None:
        out.append(_Plan(load, patient.index, len(out), "consent-objection", ()))
    if patient.research is not None:
        out.append(_Plan(load, patient.index, len(out), "consent-research", ()))
    onset_days = [float(rng.randint(60, 3000)) for _ in range(len(patient.pathways) + 1)]
    add(load, "load", *onset_days)
    span = a1 - a0
    scale = min(1.0, span / (36 * HOUR))

    def slot(need_hours: float) -> float:
        return a0 + rng.random() * max(0.0, span - need_hours * HOUR * scale)

    for pathway in patient.pathways:
        if pathway == "heart-failure":
            t, base = slot(24), round(rng.uniform(58, 105), 1)
            gain = rng.random() < 0.4
            steps = (rng.uniform(1.1, 1.5), rng.uniform(1.1, 1.5)) if gain else (0.2, -0.3)
            add(t, "weight", base)
            add(t + 12 * HOUR * scale, "weight", round(base + steps[0], 1))
            add(t + 24 * HOUR * scale, "weight", round(base + steps[0] + steps[1], 1))
            if rng.random() < 0.3:
                t = slot(34)
                add(t, "admit", 1, t)
                add(t + 18 * HOUR * scale, "discharge", 1, t)
                if rng.random() < 0.45:
                    back = t + 26 * HOUR * scale
                    add(back, "admit", 2, back)
                    add(back + 8 * HOUR * scale, "discharge", 2, back)
                elif rng.random() < 0.5:
                    add(t + 24 * HOUR * scale, "followup")
        elif pathway == "type2-diabetes":
            high = rng.random() < 0.3
            add(
                slot(0),
                "hba1c",
                round(rng.uniform(9.2, 11.8) if high else rng.uniform(6.2, 8.8), 1),
            )
            t = slot(12)
            hypo = rng.random() < 0.12
            add(t, "glucose", round(rng.uniform(5.0, 9.5), 1))
            add(
                t + 12 * HOUR * scale,
                "glucose",
                round(rng.uniform(2.6, 3.7) if hypo else rng.uniform(4.4, 9.0), 1),
            )
        elif pathway == "copd":
            t, low = slot(15), rng.random() < 0.35
            for n in range(4):
                value = rng.randint(86, 89) if low and n in (1, 2) else rng.randint(92, 97)
                add(t + 5 * HOUR * scale * n, "spo2", value)
        elif pathway == "elderly-frailty":
            if rng.random() < 0.35:
                t = slot(20)
                for n, at in enumerate((t, t + 14 * HOUR * scale), start=1):
                    add(at, "ed", n + 10, at)
                    add(at + 5 * HOUR * scale, "ed-discharge", n + 10, at)
            if rng.random() < 0.15:
                add(slot(0), "fall")
    if rng.random() < 0.25:
        add(slot(1), "visit")
    if rng.random() < 0.2:
        add(slot(0), "lab", rng.randint(75, 110))
    if patient.research == "opt-in" and rng.random() < 0.1:
        add(slot(0), "withdraw")
    return out


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]


def _render(plan: _Plan, patient: Patient, source: Source, start: datetime, speed: float) -> Event:
    at = start + timedelta(seconds=plan.t)
    key = f"demo-{_digest(patient.ins, str(plan.seq), plan.kind)}"

    def event(
        channel: Channel, payload: bytes, *, src: str = source.id, rtype: str = "", cid: str = ""
    ) -> Event:
        return Event(
            at, plan.t / speed, channel, src, plan.kind, payload, key, rtype, patient.ins, cid
        )

    def resource(res: dict[str, object]) -> Event:
        return event("http-resource", orjson.dumps(res), rtype=str(res["resourceType"]))

    args, kind = plan.args, plan.kind
    visit = (
        f"V{_digest(patient.ins, 'visit', str(int(args[0])))}"
        if "admit" in kind or "ed" in kind
        else ""
    )
    if kind == "consent-objection":
        body = fp.consent(
            patient, "objection", at, outcome="deny", purpose="TREAT", actor=patient.objects_to
        )
        return event("consent", orjson.dumps(body), src=CONSENT_DESK, rtype="Consent")
    if kind == "consent-research":
        outcome = "permit" if patient.research == "opt-in" else "deny"
        body = fp.consent(patient, "research", at, outcome=outcome, purpose="HRESCH")
        return event("consent", orjson.dumps(body), src=CONSENT_DESK, rtype="Consent")
    if kind == "withdraw":
        cid = fp.consent_id(patient, "research")
        body = withdrawal_json(ConsentWithdrawn(cid, at, "HRESCH"))
        return event("consent", orjson.dumps(body), src=CONSENT_DESK, cid=cid)
    if kind == "load":
        names = [*patient.pathways, "restricted"]
        onsets = {name: at - timedelta(days=args[n]) for n, name in enumerate(names)}
        return event("http-bundle", orjson.dumps(fp.load_bundle(patient, source, at, onsets)))
    if kind == "weight":
        return resource(fp.observation(patient, WEIGHT, args[0], "kg", at, key=key))
    if kind == "spo2":
        return resource(fp.observation(patient, SPO2, args[0], "%", at, key=key))
    if kind in ("visit", "followup"):
        gp = patient.care_team[0]
        return resource(fp.encounter(patient, "AMB", at, at + timedelta(minutes=20), gp, key=key))
    if kind == "fall":
        return resource(fp.condition(patient, fp.FALL, at, key=key, category="encounter-diagnosis"))
    if kind in ("admit", "ed"):
        klass, ward = ("IMP", "CARDIO") if kind == "admit" else ("EMER", "URG")
        payload = hp.adt(
            "A01" if kind == "admit" else "A04",
            patient,
            source,
            when=at,
            klass=klass,
            visit=visit,
            start=at,
            ward=ward,
        )
        return event("mllp", payload)
    if kind in ("discharge", "ed-discharge"):
        klass = "IMP" if kind == "discharge" else "EMER"
        began = start + timedelta(seconds=args[1])
        payload = hp.adt(
            "A03", patient, source, when=at, klass=klass, visit=visit, start=began, end=at
        )
        return event("mllp", payload)
    results = {
        "hba1c": (
            ("4548-4", "HbA1c panel"),
            hp.Result(*HBA1C, args[0], "%", "4.0-6.0", "H" if args[0] > 6 else "N"),
        ),
        "glucose": (
            ("15074-8", "Glucose"),
            hp.Result(*GLUCOSE_MOLAR, args[0], "mmol/L", "3.9-6.1", _flag(args[0], 3.9, 6.1)),
        ),
        "lab": (("2339-0", "Glucose"), hp.Result(*GLUCOSE_MASS, args[0], "mg/dL", "70-110", "N")),
    }
    panel, result = results[kind]
    return event(
        "mllp",
        hp.oru(
            patient, source, when=at, order=_digest(key, "order"), panel=panel, results=[result]
        ),
    )


def _flag(value: float, low: float, high: float) -> str:
    return "L" if value < low else "H" if value > high else "N"
