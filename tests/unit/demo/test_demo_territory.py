"""The synthetic territory: deterministic, plausible proportions, synthetic identifiers only."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caremesh.demo.territory import (
    COORDINATION,
    DEPARTEMENT,
    INS_PREFIX,
    PATHWAY_SHARES,
    REFERENCE_DATE,
    Territory,
)
from caremesh.settings import Settings


@pytest.fixture(scope="module")
def big() -> Territory:
    return Territory.generate(3)


def test_same_seed_gives_the_same_territory_and_fresh_tokens() -> None:
    one, two = Territory.generate(5, patients=200), Territory.generate(5, patients=200)
    assert one == two
    assert one.patients == two.patients
    assert one.source_tokens() != two.source_tokens()
    assert one.admin_token != two.admin_token


def test_other_seed_gives_other_patients() -> None:
    one, two = Territory.generate(5, patients=200), Territory.generate(6, patients=200)
    assert {p.ins for p in one.patients}.isdisjoint({p.ins for p in two.patients})


def test_tokens_never_show_in_repr(territory: Territory) -> None:
    text = repr(territory.sources) + repr(territory.source_settings())
    for token in [*territory.source_tokens().values(), territory.admin_token]:
        assert len(token) >= 32
        assert token not in text


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 400))
def test_ins_values_are_synthetic_and_unique(seed: int, size: int) -> None:
    territory = Territory.generate(seed, patients=size, hospitals=2, providers=4)
    values = [p.ins for p in territory.patients]
    assert len(set(values)) == size
    assert all(v.isdigit() and len(v) == 15 and v.startswith(INS_PREFIX) for v in values)
    assert len({p.local_id for p in territory.patients}) == size


def test_organisations_sources_and_studies(big: Territory) -> None:
    ids = [o.id for o in big.organisations]
    assert ids[:3] == ["hosp-1", "hosp-2", "hosp-3"]
    assert COORDINATION in ids
    assert sum(1 for i in ids if i.startswith("gp-")) == 7
    assert sum(1 for i in ids if i.startswith("home-care-")) == 3
    org_settings = {o.id: o for o in big.organisation_settings()}
    assert set(org_settings["gp-01"].subscriptions) == {"Observation", "Encounter", "Condition"}
    assert org_settings["hosp-1"].subscriptions == ["Encounter"]
    sources = big.source_settings()
    assert [s.id for s in sources] == ["hosp-1-sih", "hosp-2-sih", "hosp-3-sih"]
    assert {s.id: s.token.get_secret_value() for s in sources if s.token} == big.source_tokens()
    admins = big.consent_admins()
    assert [t.get_secret_value() for t in admins.values()] == [big.admin_token]
    studies = {s.id: s for s in big.study_settings()}
    assert (studies["diabetes-cohort"].purpose, studies["diabetes-cohort"].consent_default) == (
        "HRESCH",
        "deny",
    )
    assert (studies["observatory"].purpose, studies["observatory"].consent_default) == (
        "PUBHLTH",
        "permit",
    )
    # the helpers produce what the root settings accept
    Settings(
        organisations=big.organisation_settings(),
        sources=sources,
        studies=big.study_settings(),
    )


def test_care_teams_have_a_gp_and_two_to_four_members(big: Territory) -> None:
    known = {o.id for o in big.organisations}
    for patient in big.patients:
        assert 2 <= len(patient.care_team) <= 4
        assert len(set(patient.care_team)) == len(patient.care_team)
        assert patient.care_team[0].startswith("gp-")
        assert patient.hospital in patient.care_team
        assert set(patient.care_team) <= known
        if patient.objects_to is not None:
            assert patient.objects_to in patient.care_team


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        *[(f"pathway:{name}", share) for name, share in PATHWAY_SHARES.items()],
        ("objection", 0.05),
        ("opt-out", 0.15),
        ("opt-in", 0.20),
        ("restricted", 0.03),
    ],
)
def test_proportions(big: Territory, what: str, expected: float) -> None:
    counts: Counter[str] = Counter()
    for p in big.patients:
        counts.update(f"pathway:{name}" for name in p.pathways)
        counts.update(
            [k for k, v in (("objection", p.objects_to), ("restricted", p.restricted)) if v]
        )
        if p.research is not None:
            counts[p.research] += 1
    assert counts[what] / len(big.patients) == pytest.approx(expected, abs=0.01)


def test_frail_patients_are_75_or_older_and_people_look_plausible(big: Territory) -> None:
    frail = [p for p in big.patients if "elderly-frailty" in p.pathways]
    assert frail
    assert all(p.age(REFERENCE_DATE) >= 75 for p in frail)
    assert all(18 <= p.age(REFERENCE_DATE) <= 97 for p in big.patients)
    assert all(
        p.postal_code.startswith(DEPARTEMENT) and len(p.postal_code) == 5 for p in big.patients
    )
    assert len({p.city for p in big.patients}) == 33
    assert {p.gender for p in big.patients} == {"female", "male"}


def test_generate_refuses_empty_territories() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Territory.generate(1, patients=0)
