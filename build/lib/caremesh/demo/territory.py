"""The demo's synthetic territory: organisations, source systems, patients, care teams, consents.

Everything here is made up from a seed: INS values start with the synthetic prefix `999` (no
real NIR starts with 9), postal codes belong to the fictional département 99, names come from
small built-in lists. The only values not derived from the seed are the bearer tokens of the
source systems and of the consent administrator: they are drawn from `secrets` when the
territory is generated, and are left out of equality and `repr`.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Final, Literal

from pydantic import SecretStr

from caremesh.settings import OrganisationSettings, SourceSettings, StudySettings

__all__ = [
    "CONSENT_DESK",
    "COORDINATION",
    "Organisation",
    "Patient",
    "Source",
    "Territory",
]

CONSENT_DESK: Final = "consent-desk"
"""Name of the demo's consent administrator (the feeder posting consents)."""
COORDINATION: Final = "care-coordination"
"""Id of the coordinating organisation (the shipped pathways' `coordinator`)."""
INS_PREFIX: Final = "999"
"""Every synthetic INS is this prefix and 12 digits (15 digits, like an INS with its key)."""
DEPARTEMENT: Final = "99"
"""The fictional département of the territory's postal codes."""
REFERENCE_DATE: Final = date(2025, 1, 1)
"""Ages are drawn relative to this date, so a seed gives the same birth dates every year."""

PathwayId = Literal["heart-failure", "type2-diabetes", "copd", "elderly-frailty"]
PATHWAY_SHARES: Final[dict[PathwayId, float]] = {
    "heart-failure": 0.10,
    "type2-diabetes": 0.12,
    "copd": 0.06,
    "elderly-frailty": 0.08,
}
OBJECTION_SHARE: Final = 0.05
RESEARCH_OPT_OUT_SHARE: Final = 0.15
RESEARCH_OPT_IN_SHARE: Final = 0.20
RESTRICTED_SHARE: Final = 0.03
ELDERLY_SHARE: Final = 0.24
"""Share of patients aged 75 or more (the frailty pathway draws from them)."""

_FAMILY: Final = (
    "Martin", "Bernard", "Thomas", "Petit", "Robert", "Richard", "Durand", "Dubois", "Moreau",
    "Laurent", "Simon", "Michel", "Lefèvre", "Leroy", "Roux", "David", "Bertrand", "Morel",
    "Fournier", "Girard", "Bonnet", "Dupont", "Lambert", "Fontaine", "Rousseau", "Vincent",
    "Muller", "Lefort", "Faure", "André", "Mercier", "Blanc", "Guérin", "Boyer", "Garnier",
    "Chevalier", "François", "Legrand", "Gauthier", "Perrin",
)  # fmt: skip
_GIVEN_F: Final = (
    "Camille", "Léa", "Manon", "Chloé", "Inès", "Louise", "Jeanne", "Alice", "Élise", "Margot",
    "Odile", "Simone", "Hélène", "Colette", "Suzanne", "Agnès", "Mireille", "Nathalie",
)  # fmt: skip
_GIVEN_M: Final = (
    "Louis", "Hugo", "Jules", "Lucas", "Gabriel", "Arthur", "Théo", "Paul", "Émile", "Marcel",
    "René", "Bernard", "Gérard", "Yves", "Pierre", "Antoine", "Étienne", "Olivier",
)  # fmt: skip
_TOWN_ROOTS: Final = (
    "Valmerle", "Clairfonds", "Brumesac", "Orvielle", "Castelnoir", "Fontrouge", "Ménilbois",
    "Sautreval", "Pradeloup", "Chaumelin", "Roquevent",
)  # fmt: skip
_TOWN_SUFFIXES: Final = ("", "-sur-Lise", "-le-Haut")
_STREETS: Final = (
    "rue des Tilleuls", "avenue du Parc", "place de la Mairie", "chemin des Vignes",
    "rue du Moulin", "allée des Cerisiers", "boulevard de l Ouest", "impasse des Lilas",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Organisation:
    """A care provider of the territory."""

    id: str
    name: str
    kind: Literal["hospital", "gp", "home-care", "coordination"]
    subscriptions: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Source:
    """A hospital's source system: publishes FHIR over HTTP and HL7 v2 over MLLP."""

    id: str
    hospital: str
    oid: str
    """Assigning authority OID of the hospital's local patient ids (a fictional 999 arc)."""
    token: str = field(compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Patient:
    """One synthetic person, with where they are treated and what they agreed to.

    Identifying fields are left out of `repr`, like real ones would be.
    """

    index: int
    ins: str = field(repr=False)
    local_id: str = field(repr=False)
    source: str
    hospital: str
    family: str = field(repr=False)
    given: str = field(repr=False)
    gender: Literal["male", "female"]
    birth_date: date = field(repr=False)
    line: str = field(repr=False)
    city: str = field(repr=False)
    postal_code: str = field(repr=False)
    care_team: tuple[str, ...]
    pathways: tuple[PathwayId, ...]
    objects_to: str | None
    research: Literal["opt-in", "opt-out"] | None
    restricted: bool

    def age(self, on: date = REFERENCE_DATE) -> int:
        """Age in whole years on `on`."""
        before = (on.month, on.day) < (self.birth_date.month, self.birth_date.day)
        return on.year - self.birth_date.year - int(before)


@dataclass(frozen=True)
class Territory:
    """A deterministic synthetic territory: same seed, same territory (tokens aside)."""

    seed: int
    organisations: tuple[Organisation, ...]
    sources: tuple[Source, ...]
    patients: tuple[Patient, ...] = field(repr=False)
    admin_token: str = field(compare=False, repr=False)

    @classmethod
    def generate(
        cls, seed: int, patients: int = 2000, hospitals: int = 3, providers: int = 10
    ) -> Territory:
        """Build the territory: `hospitals` hospitals, `providers` GPs and home-care services."""
        if patients < 1 or hospitals < 1 or providers < 1:
            raise ValueError("patients, hospitals and providers must be at least 1")
        # synthetic data reproducible from a seed, not a secret: a seeded PRNG is the point
        rng = random.Random(f"caremesh-demo-territory:{seed}")  # noqa: S311
        orgs = _organisations(hospitals, providers)
        sources = tuple(
            Source(f"{o.id}-sih", o.id, f"1.2.250.1.999.{n}.1", secrets.token_urlsafe(32))
            for n, o in enumerate((o for o in orgs if o.kind == "hospital"), start=1)
        )
        people = _patients(rng, patients, orgs, sources)
        return cls(seed, orgs, sources, people, secrets.token_urlsafe(32))

    def organisation(self, org_id: str) -> Organisation:
        """The organisation with this id; KeyError when there is none."""
        for org in self.organisations:
            if org.id == org_id:
                return org
        raise KeyError(org_id)

    def source_tokens(self) -> dict[str, str]:
        """Source id → bearer token, for the feeders."""
        return {s.id: s.token for s in self.sources}

    def organisation_settings(self) -> list[OrganisationSettings]:
        """The organisations with their subscriptions, for `Settings.organisations`."""
        return [
            OrganisationSettings(id=o.id, name=o.name, subscriptions=list(o.subscriptions))
            for o in self.organisations
        ]

    def source_settings(self) -> list[SourceSettings]:
        """The source systems with their tokens (FHIR R4), for `Settings.sources`."""
        return [
            SourceSettings(id=s.id, token=SecretStr(s.token), fhir_release="R4")
            for s in self.sources
        ]

    def consent_admins(self) -> dict[str, SecretStr]:
        """Administrator name → token, for `Settings.consent_api.admins` (the feeder's token)."""
        return {CONSENT_DESK: SecretStr(self.admin_token)}

    def study_settings(self) -> list[StudySettings]:
        """An opt-in research cohort (HRESCH) and the opt-out observatory (PUBHLTH)."""
        return [
            StudySettings(id="diabetes-cohort", purpose="HRESCH", consent_default="deny"),
            StudySettings(id="observatory", purpose="PUBHLTH", consent_default="permit"),
        ]


def _organisations(hospitals: int, providers: int) -> tuple[Organisation, ...]:
    gps = max(1, round(providers * 0.7))
    home = providers - gps
    out = [
        Organisation(f"hosp-{n}", f"Centre hospitalier {n}", "hospital", ("Encounter",))
        for n in range(1, hospitals + 1)
    ]
    out += [
        Organisation(
            f"gp-{n:02d}", f"Cabinet médical {n}", "gp", ("Observation", "Encounter", "Condition")
        )
        for n in range(1, gps + 1)
    ]
    out += [
        Organisation(f"home-care-{n}", f"Soins à domicile {n}", "home-care", ("Observation",))
        for n in range(1, home + 1)
    ]
    out.append(
        Organisation(COORDINATION, "Équipe de coordination", "coordination", ("Communication",))
    )
    return tuple(out)


def _towns() -> list[tuple[str, str]]:
    """The 33 municipalities of the fictional département: (name, postal code)."""
    names = [root + suffix for suffix in _TOWN_SUFFIXES for root in _TOWN_ROOTS]
    return [(name, f"{DEPARTEMENT}{10 * (n + 1):03d}") for n, name in enumerate(names)]


def _pick(rng: random.Random, pool: list[int], share: float, total: int) -> set[int]:
    """round(share * total) indices drawn from `pool` (all of it when it is smaller)."""
    return set(rng.sample(pool, min(len(pool), round(share * total))))


def _patients(
    rng: random.Random, n: int, orgs: tuple[Organisation, ...], sources: tuple[Source, ...]
) -> tuple[Patient, ...]:
    towns = _towns()
    gps = [o.id for o in orgs if o.kind == "gp"]
    homes = [o.id for o in orgs if o.kind == "home-care"]
    hospitals = [o.id for o in orgs if o.kind == "hospital"]
    numbers = rng.sample(range(10**12), n)
    everyone = list(range(n))
    elderly = _pick(rng, everyone, ELDERLY_SHARE, n)
    enrolled: dict[int, list[PathwayId]] = {i: [] for i in everyone}
    for pathway, share in PATHWAY_SHARES.items():
        pool = sorted(elderly) if pathway == "elderly-frailty" else everyone
        for i in sorted(_pick(rng, pool, share, n)):
            enrolled[i].append(pathway)
    consenting = rng.sample(everyone, round((RESEARCH_OPT_IN_SHARE + RESEARCH_OPT_OUT_SHARE) * n))
    cut = round(RESEARCH_OPT_IN_SHARE * n)
    research: dict[int, Literal["opt-in", "opt-out"]] = dict.fromkeys(consenting[:cut], "opt-in")
    research.update(dict.fromkeys(consenting[cut:], "opt-out"))
    objecting = _pick(rng, everyone, OBJECTION_SHARE, n)
    restricted = _pick(rng, everyone, RESTRICTED_SHARE, n)
    out = []
    for i in everyone:
        gender: Literal["male", "female"] = "female" if rng.random() < 0.52 else "male"
        given = rng.choice(_GIVEN_F if gender == "female" else _GIVEN_M)
        age = rng.randint(75, 97) if i in elderly else rng.randint(18, 74)
        birth = REFERENCE_DATE - timedelta(days=365 * age + age // 4 + rng.randint(1, 360))
        hosp_index = rng.randrange(len(hospitals))
        team = [rng.choice(gps), hospitals[hosp_index]]
        pathways = enrolled[i]
        if homes and (pathways or rng.random() < 0.15):
            team.append(rng.choice(homes))
        if len(hospitals) > 1 and rng.random() < 0.2:
            team.append(rng.choice([h for h in hospitals if h != hospitals[hosp_index]]))
        town, postal = rng.choice(towns)
        out.append(
            Patient(
                index=i,
                ins=f"{INS_PREFIX}{numbers[i]:012d}",
                local_id=f"P{rng.randrange(10**8):08d}x{i}",
                source=sources[hosp_index].id,
                hospital=hospitals[hosp_index],
                family=rng.choice(_FAMILY),
                given=given,
                gender=gender,
                birth_date=birth,
                line=f"{rng.randint(1, 120)} {rng.choice(_STREETS)}",
                city=town,
                postal_code=postal,
                care_team=tuple(team),
                pathways=tuple(pathways),
                objects_to=rng.choice(team) if i in objecting else None,
                research=research.get(i),
                restricted=i in restricted,
            )
        )
    return tuple(out)
