"""ACL generation: who may read and write what, denied by default."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caremesh.security.acl import (
    AclRule,
    Op,
    Pattern,
    Resource,
    acl_rules,
    allowed,
    least_privilege_violations,
)
from caremesh.security.commands import platform
from caremesh.security.principals import principals
from caremesh.settings import OrganisationSettings, Settings, StudySettings


def _settings(prefix: str = "") -> Settings:
    return Settings(
        organisations=[
            OrganisationSettings(id="hosp-a", fhir_endpoint="http://a.example/fhir"),
            OrganisationSettings(id="clinic-b"),
        ],
        studies=[StudySettings(id="hf"), StudySettings(id="hf2")],
        kafka={"topic_prefix": prefix},
    )


RULES = platform(_settings())[1]

R, W = Op.READ, Op.WRITE
TABLE = [
    # principal, operation, topic, allowed
    ("study-hf", R, "research.hf.v1", True),
    ("study-hf", R, "research.hf2.v1", False),
    ("study-hf2", R, "research.hf.v1", False),
    ("study-hf", R, "clinical.fhir.v1", False),
    ("study-hf", W, "research.hf.v1", False),
    ("study-hf", R, "keys.patient.v1", False),
    ("study-hf", R, "audit.v1", False),
    ("org-hosp-a", R, "outbox.hosp-a.v1", True),
    ("org-hosp-a", R, "outbox.clinic-b.v1", False),
    ("org-clinic-b", R, "outbox.hosp-a.v1", False),
    ("org-hosp-a", W, "outbox.hosp-a.v1", False),
    ("org-hosp-a", R, "clinical.fhir.v1", False),
    ("caremesh-auditor", R, "audit.v1", True),
    ("caremesh-auditor", R, "clinical.fhir.v1", False),
    ("caremesh-operator", R, "deadletter.v1", True),
    ("caremesh-operator", R, "audit.v1", False),
    ("caremesh-ingest-api", W, "ingest.fhir.v1", True),
    ("caremesh-ingest-api", R, "ingest.fhir.v1", False),
    ("caremesh-ingest-api", W, "clinical.fhir.v1", False),
    ("caremesh-mllp", W, "ingest.hl7v2.v1", True),
    ("caremesh-mllp", W, "ingest.fhir.v1", False),
    ("caremesh-hl7v2", R, "ingest.hl7v2.v1", True),
    ("caremesh-hl7v2", W, "ingest.fhir.v1", True),
    ("caremesh-hl7v2", R, "clinical.fhir.v1", False),
    ("caremesh-validate", R, "ingest.fhir.v1", True),
    ("caremesh-validate", W, "clinical.fhir.v1", True),
    ("caremesh-validate", W, "deadletter.v1", True),
    ("caremesh-validate", R, "deadletter.v1", False),
    ("caremesh-validate", R, "caremesh-validate-links", True),
    ("caremesh-validate", R, "caremesh-share-care-teams", False),
    ("caremesh-share", R, "clinical.fhir.v1", True),
    ("caremesh-share", W, "outbox.hosp-a.v1", True),
    ("caremesh-share", R, "outbox.hosp-a.v1", False),
    ("caremesh-share", W, "research.hf.v1", False),
    ("caremesh-share", R, "caremesh-share-care-teams", True),
    ("caremesh-share", R, "caremesh-research-released", False),
    ("caremesh-share", R, "caremesh-validate-links", False),
    ("caremesh-research", W, "research.hf.v1", True),
    ("caremesh-research", R, "research.hf.v1", False),
    ("caremesh-research", W, "outbox.hosp-a.v1", False),
    ("caremesh-research", R, "caremesh-research-released", True),
    ("caremesh-pathways", R, "pathway.actions.v1", True),
    ("caremesh-pathways", W, "pathway.alerts.v1", True),
    ("caremesh-pathways", W, "outbox.hosp-a.v1", False),
    ("caremesh-pathways", R, "caremesh-pathways-state", True),
    ("caremesh-pathways", W, "caremesh-pathways-state", True),
    ("caremesh-pathways", R, "caremesh-research-released", False),
    ("caremesh-delivery", R, "outbox.hosp-a.v1", True),
    ("caremesh-delivery", R, "outbox.clinic-b.v1", False),  # no endpoint: its own Kafka topic
    ("caremesh-delivery", W, "delivery.failed.v1", True),
    ("caremesh-inbox", R, "pathway.alerts.v1", True),
    ("caremesh-inbox", W, "pathway.actions.v1", True),
    ("caremesh-inbox", W, "pathway.alerts.v1", False),
    ("caremesh-inbox", R, "clinical.fhir.v1", True),  # Patient and CareTeam for the cards
    ("caremesh-inbox", R, "consent.events.v1", True),
    ("caremesh-inbox", W, "clinical.fhir.v1", False),
    ("caremesh-consent-api", W, "consent.events.v1", True),
    ("caremesh-consent-api", R, "clinical.fhir.v1", False),
    ("caremesh-consent-api", R, "caremesh-validate-patient-links", True),
    ("caremesh-consent-api", W, "caremesh-validate-patient-links", False),
    ("caremesh-worker", R, "clinical.fhir.v1", True),
    ("caremesh-worker", W, "research.hf.v1", True),
    ("caremesh-worker", R, "audit.v1", False),
    ("caremesh-worker", R, "keys.patient.v1", True),  # wrapped keys; useless without the master
    ("caremesh-validate", R, "keys.patient.v1", False),
    ("caremesh-inbox", R, "keys.patient.v1", False),
    ("caremesh-delivery", R, "keys.patient.v1", False),
    ("caremesh-consent-api", W, "keys.patient.v1", True),  # erasure tombstones
    ("caremesh-admin", R, "audit.v1", True),
    ("caremesh-admin", Op.ALTER_CONFIGS, "audit.v1", True),
    ("nobody", R, "outbox.hosp-a.v1", False),
]


@pytest.mark.parametrize(("principal", "op", "topic", "expected"), TABLE)
def test_who_may_use_which_topic(principal: str, op: Op, topic: str, expected: bool) -> None:
    assert allowed(RULES, principal, op, Resource.TOPIC, topic) is expected


@pytest.mark.parametrize(
    ("principal", "group", "expected"),
    [
        ("study-hf", "study-hf.export", True),
        ("study-hf", "study-hf2.export", False),
        ("study-hf2", "study-hf.export", False),
        ("org-hosp-a", "org-hosp-a.ehr", True),
        ("org-hosp-a", "org-clinic-b.ehr", False),
        ("caremesh-delivery", "delivery-hosp-a", True),
        ("caremesh-share", "caremesh-share", True),
        ("caremesh-share", "caremesh-research", False),
        ("caremesh-research", "caremesh-research", True),
        ("caremesh-pathways", "caremesh-share", False),
        ("caremesh-validate", "caremesh-validate", True),
        ("caremesh-validate", "caremesh-hl7v2", False),
        ("caremesh-ingest-api", "caremesh", False),
    ],
)
def test_consumer_groups_are_scoped(principal: str, group: str, expected: bool) -> None:
    assert allowed(RULES, principal, Op.READ, Resource.GROUP, group) is expected


def test_only_the_admin_alters_the_cluster_or_topic_configs() -> None:
    non_admin = [r for r in RULES if r.principal != "User:caremesh-admin"]
    assert non_admin
    assert not [r for r in non_admin if r.operation in {Op.ALL, Op.ALTER, Op.ALTER_CONFIGS}]
    assert not [r for r in non_admin if r.resource is Resource.CLUSTER]
    assert allowed(RULES, "caremesh-admin", Op.ALTER, Resource.CLUSTER, "kafka-cluster")


@pytest.mark.parametrize(
    "bad",
    [
        AclRule("User:study-hf", Resource.TOPIC, "audit.v1", Pattern.LITERAL, Op.READ),
        AclRule("User:study-hf", Resource.TOPIC, "audit", Pattern.PREFIXED, Op.READ),
        AclRule(
            "User:caremesh-share", Resource.TOPIC, "audit.v1", Pattern.LITERAL, Op.ALTER_CONFIGS
        ),
        AclRule(
            "User:caremesh-share", Resource.CLUSTER, "kafka-cluster", Pattern.LITERAL, Op.ALTER
        ),
        AclRule("User:org-hosp-a", Resource.TOPIC, "*", Pattern.LITERAL, Op.READ),
    ],
)
def test_violations_are_reported(bad: AclRule) -> None:
    assert least_privilege_violations([*RULES, bad], "caremesh-admin", ["caremesh-auditor"])
    assert least_privilege_violations(RULES, "caremesh-admin", ["caremesh-auditor"]) == []


def test_topic_prefix_applies_to_catalogue_and_internal_topics() -> None:
    rules = platform(_settings(prefix="t1."))[1]
    assert allowed(rules, "study-hf", Op.READ, Resource.TOPIC, "t1.research.hf.v1")
    assert not allowed(rules, "study-hf", Op.READ, Resource.TOPIC, "research.hf.v1")
    assert allowed(rules, "caremesh-validate", Op.CREATE, Resource.TOPIC, "t1.caremesh-validate-x")
    assert allowed(rules, "caremesh-share", Op.READ, Resource.TOPIC, "t1.caremesh-share-x")
    assert not allowed(rules, "caremesh-share", Op.READ, Resource.TOPIC, "caremesh-share-x")


def test_principal_names_are_unique() -> None:
    names = [p.name for p in principals(_settings())]
    assert len(names) == len(set(names))
    with pytest.raises(ValueError, match="used twice"):
        principals(Settings(security={"auditors": ["caremesh-worker"]}))


ids = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)


@given(st.lists(ids, min_size=2, max_size=4, unique=True))
def test_no_study_reads_another_studys_topic(study_ids: list[str]) -> None:
    settings = Settings(studies=[StudySettings(id=s) for s in study_ids])
    rules = acl_rules(principals(settings))
    for reader in study_ids:
        for other in study_ids:
            may = allowed(rules, f"study-{reader}", Op.READ, Resource.TOPIC, f"research.{other}.v1")
            assert may is (reader == other)
            group = f"study-{other}.g"
            assert allowed(rules, f"study-{reader}", Op.READ, Resource.GROUP, group) is (
                reader == other
            )
