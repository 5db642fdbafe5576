"""Loading pathway files: the shipped ones, and clear errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from caremesh.errors import ConfigurationError
from caremesh.pathways import load_pathway, load_pathways, load_shipped_pathways
from caremesh.pathways.definition import CodeSet, Pathway, shipped_directory

GOOD = {
    "id": "demo",
    "title": "Demo",
    "version": "1",
    "coordinator": "Organization/coord-1",
    "enrolment": [
        {
            "resource_type": "Condition",
            "codes": [{"system": "http://snomed.info/sct", "codes": ["84114007"]}],
        }
    ],
    "rules": [
        {
            "id": "high-value",
            "kind": "threshold",
            "severity": "low",
            "title": "High",
            "text": "High value.",
            "match": {
                "resource_types": ["Observation"],
                "codes": [{"system": "http://loinc.org", "codes": ["29463-7"]}],
            },
            "comparator": ">",
            "thresholds": [{"value": 100, "unit": "kg"}],
        }
    ],
}


def write(tmp_path: Path, data: object, name: str = "demo.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def with_rule(**changes: object) -> dict[str, object]:
    rule = {**GOOD["rules"][0], **changes}  # type: ignore[index]
    return {**GOOD, "rules": [{k: v for k, v in rule.items() if v is not None}]}


def counting(**changes: object) -> dict[str, object]:
    """A count_in_window rule built from GOOD's threshold rule."""
    fields: dict[str, object] = {
        "kind": "count_in_window",
        "comparator": None,
        "thresholds": None,
        "count": 2,
        "window": "3d",
    }
    return with_rule(**{**fields, **changes})


def test_shipped_pathways_load() -> None:
    pathways = load_shipped_pathways()
    assert sorted(pathways) == ["copd", "elderly-frailty", "heart-failure", "type2-diabetes"]
    assert all(p.coordinator == "Organization/care-coordination" for p in pathways.values())


def test_shipped_files_say_they_are_not_medical_advice() -> None:
    for path in shipped_directory().glob("*.yaml"):
        assert "NOT MEDICAL ADVICE" in path.read_text().replace("\n# ", " "), path.name


def test_shipped_thresholds_cite_a_source() -> None:
    for path in shipped_directory().glob("*.yaml"):
        text = path.read_text()
        assert text.count("# Source:") >= len(load_pathway(path).rules), path.name


def test_coordinator_override(tmp_path: Path) -> None:
    write(tmp_path, GOOD)
    loaded = load_pathways(tmp_path, coordinators={"demo": "Organization/other"})
    assert loaded["demo"].coordinator == "Organization/other"
    assert load_pathway(tmp_path / "demo.yaml", coordinator="Organization/x").coordinator == (
        "Organization/x"
    )
    with pytest.raises(ConfigurationError, match="coordinator must be Organization"):
        load_pathway(tmp_path / "demo.yaml", coordinator="Practitioner/x")
    with pytest.raises(ConfigurationError, match="unknown pathway nope"):
        load_pathways(tmp_path, coordinators={"nope": "Organization/x"})


@pytest.mark.parametrize(
    ("data", "expected", "secret"),
    [
        pytest.param(
            with_rule(comparator="=>"), "rule high-value: field rules[0].comparator", "=>", id="cmp"
        ),
        pytest.param(
            with_rule(thresholds=[{"value": 1, "unit": "kilos"}]),
            "rule high-value: field rules[0].thresholds[0]: Value error, unsupported UCUM unit",
            "kilos",
            id="unit",
        ),
        pytest.param(
            with_rule(kind="magic"),
            "rule high-value: field rules[0]: unknown rule kind; expected one of threshold",
            "magic",
            id="kind",
        ),
        pytest.param(
            with_rule(treshold=3),
            "rule high-value: field rules[0].treshold: Extra inputs",
            "3",
            id="extra",
        ),
        pytest.param(
            counting(window="3 days"),
            "rule high-value: field rules[0].window: Value error, a duration is",
            "3 days",
            id="duration",
        ),
        pytest.param(
            with_rule(severity="urgent"),
            "rule high-value: field rules[0].severity",
            "urgent",
            id="sev",
        ),
        pytest.param(
            with_rule(match={"resource_types": ["Encounter"]}),
            "rule high-value: field rules[0]: Value error, quantity rules match",
            None,
            id="threshold-on-encounter",
        ),
        pytest.param(
            {**GOOD, "coordinator": "Org/1"},
            "field coordinator: String should match",
            "Org/1",
            id="org",
        ),
        pytest.param(
            {**GOOD, "rules": [GOOD["rules"][0], GOOD["rules"][0]]},  # type: ignore[index]
            "field (root): Value error, duplicate rule id",
            None,
            id="dup-rule",
        ),
        pytest.param(
            {**GOOD, "enrolment": []},
            "field enrolment: Tuple should have at least 1",
            None,
            id="enrol",
        ),
        pytest.param(
            {k: v for k, v in GOOD.items() if k != "rules"},
            "field rules: Field required",
            None,
            id="no-rules",
        ),
    ],
)
def test_bad_definitions_name_file_rule_and_field(
    tmp_path: Path, data: object, expected: str, secret: str | None
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ConfigurationError) as caught:
        load_pathway(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message
    if secret is not None:
        assert f"'{secret}'" not in message
        assert f"input_value={secret}" not in message


def test_rule_without_id_is_reported_by_position(tmp_path: Path) -> None:
    rule = {k: v for k, v in GOOD["rules"][0].items() if k != "id"}  # type: ignore[index]
    path = write(tmp_path, {**GOOD, "rules": [rule]})
    with pytest.raises(ConfigurationError, match=r"field rules\[0\]\.id: Field required"):
        load_pathway(path)


def test_yaml_syntax_error_gives_position_not_content(tmp_path: Path) -> None:
    path = write(tmp_path, "id: demo\nrules:\n  - comparator: >=\n    x: [unclosed\n")
    with pytest.raises(ConfigurationError, match=r"not valid YAML at line \d+, column \d+$"):
        load_pathway(path)


@pytest.mark.parametrize("content", ["- a\n- b\n", "just text\n", ""])
def test_document_must_be_a_mapping(tmp_path: Path, content: str) -> None:
    with pytest.raises(ConfigurationError, match="must be a YAML mapping"):
        load_pathway(write(tmp_path, content))


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_pathway(tmp_path / "absent.yaml")
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_pathways(tmp_path / "absent")
    with pytest.raises(ConfigurationError, match="no pathway files"):
        load_pathways(tmp_path)


def test_duplicate_pathway_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD, "b.yml")
    with pytest.raises(ConfigurationError, match=r"b\.yml: pathway id demo already in .*a\.yaml"):
        load_pathways(tmp_path)


def test_encounter_only_options_are_rejected_elsewhere() -> None:
    bad = counting(match={"resource_types": ["Observation"], "encounter_classes": ["EMER"]})
    with pytest.raises(ConfigurationError, match="apply to Encounter only"):
        load_pathway_from(bad)


def load_pathway_from(data: dict[str, object]) -> Pathway:
    from caremesh.pathways import parse_pathway

    return parse_pathway(data, source="inline.yaml")


@pytest.mark.parametrize(
    ("codes", "ranges", "code", "hit"),
    [
        (["I50*"], [], "I50.9", True),
        (["I50*"], [], "I509", True),
        (["I50*"], [], "I5", False),
        (["I50*"], [], "I42.0", False),
        (["R54"], [], "R54", True),
        (["R54"], [], "R54.1", False),
        ([], ["W00-W19"], "W00", True),
        ([], ["W00-W19"], "W19.9", True),
        ([], ["W00-W19"], "W10.2", True),
        ([], ["W00-W19"], "W20", False),
        ([], ["W00-W19"], "V99", False),
    ],
)
def test_code_set_matching(codes: list[str], ranges: list[str], code: str, hit: bool) -> None:
    code_set = CodeSet(
        system="http://hl7.org/fhir/sid/icd-10", codes=tuple(codes), ranges=tuple(ranges)
    )
    assert code_set.matches("http://hl7.org/fhir/sid/icd-10", code) is hit
    assert code_set.matches("http://snomed.info/sct", code) is False


@pytest.mark.parametrize("ranges", [["W00"], ["W0-W19"], ["-W19"]])
def test_bad_ranges_are_rejected(ranges: list[str]) -> None:
    with pytest.raises(ValueError, match="a range is LOW-HIGH"):
        CodeSet(system="http://hl7.org/fhir/sid/icd-10", ranges=tuple(ranges))


def test_one_bad_rule_reports_only_its_own_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_pathway_from(with_rule(comparator="=>"))
    message = str(caught.value)
    assert message == (
        "inline.yaml: rule high-value: field rules[0].comparator: "
        "Input should be '>', '>=', '<' or '<='"
    )


def test_state_format_is_checked() -> None:
    from caremesh.pathways import PatientPathwayState

    assert PatientPathwayState.from_dict(None).to_dict() == PatientPathwayState().to_dict()
    with pytest.raises(ValueError, match="unsupported pathway state format"):
        PatientPathwayState.from_dict({"format": 99})
