from caremesh import topics
from caremesh.topics import KeyKind


def test_catalogue_has_design_topics_and_configured_outboxes_and_studies() -> None:
    specs = {s.name: s for s in topics.catalogue(["gp-nord"], [("diab-cohort", 90)])}
    for name in [
        "ingest.fhir.v1",
        "ingest.hl7v2.v1",
        "clinical.fhir.v1",
        "deadletter.v1",
        "consent.events.v1",
        "pathway.alerts.v1",
        "pathway.actions.v1",
        "audit.v1",
        "keys.patient.v1",
        "outbox.gp-nord.v1",
        "research.diab-cohort.v1",
    ]:
        assert name in specs
    assert specs["clinical.fhir.v1"].key is KeyKind.PATIENT_KEY
    assert specs["research.diab-cohort.v1"].key is KeyKind.STUDY_PSEUDONYM
    assert specs["research.diab-cohort.v1"].retention_ms == 90 * topics.DAY_MS
    assert specs["keys.patient.v1"].config()["cleanup.policy"] == "compact"
    assert specs["audit.v1"].config()["retention.ms"] == "-1"
    assert specs["ingest.fhir.v1"].config()["retention.ms"] == str(7 * topics.DAY_MS)
