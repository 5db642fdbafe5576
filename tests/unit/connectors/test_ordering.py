"""The ingest partition of a message: Java murmur2, and the per-patient ordering keys."""

from __future__ import annotations

import orjson
import pytest

from caremesh.connectors.fhir_checks import Checked, check_fhir
from caremesh.connectors.ordering import hl7v2_ordering_key, ingest_partition
from caremesh.fhir.hl7v2 import Separators, parse_hl7
from caremesh.kafka.partitioning import murmur2, partition_for
from tests.unit.connectors.connectors_synth import SYNTH_LOCAL_ID, bundle, hl7, observation

INS = "urn:oid:1.2.250.1.213.1.4.8"


@pytest.mark.parametrize(
    ("data", "expected"),
    [  # org.apache.kafka.common.utils.UtilsTest#testMurmur2 (Java's signed ints)
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_is_javas(data: bytes, expected: int) -> None:
    assert murmur2(data) & 0xFFFFFFFF == expected & 0xFFFFFFFF


def test_partition_for_is_the_java_partitioner() -> None:
    assert partition_for(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7
    assert {partition_for(str(i).encode(), 3) for i in range(100)} == {0, 1, 2}
    with pytest.raises(ValueError, match="at least one"):
        partition_for(b"x", 0)


def _checked(resource: dict[str, object]) -> Checked:
    out = check_fhir(orjson.dumps(resource), source="hosp", release_hint=None)
    assert isinstance(out, Checked), out
    return out


def _obs(ins: str | None = None, ref: str | None = None) -> dict[str, object]:
    obs = observation()
    obs["subject"] = {"identifier": {"system": INS, "value": ins}} if ins else {"reference": ref}
    return obs


def test_fhir_ordering_key_is_the_patient_of_the_message() -> None:
    assert _checked(_obs(ins="2990175000001")).ordering_key == "2990175000001"
    assert _checked(_obs(ref="Patient/p9")).ordering_key == "hosp/Patient/p9"
    one_patient = bundle()  # a Patient and its Observation
    assert _checked(one_patient).ordering_key == "hosp/Patient/p1"
    mixed = bundle()
    other = {"resource": _obs(ins="2990175000002"), "request": {"method": "POST", "url": "X"}}
    mixed["entry"].append(other)
    assert _checked(mixed).ordering_key is None
    org = {"resourceType": "Organization", "id": "o1", "name": "Synthetic clinic"}
    assert _checked(org).ordering_key is None


def test_same_patient_same_partition_whatever_the_message_id() -> None:
    parts = {ingest_partition("2990175000001", f"m-{i}".encode(), 6) for i in range(50)}
    assert len(parts) == 1
    # without an ordering key the record key decides, as the partitioner would
    assert ingest_partition(None, b"foobar", 7) == partition_for(b"foobar", 7)


def test_hl7v2_ordering_key_reads_pid3() -> None:
    raw = hl7()
    seps = parse_hl7(raw).seps
    assert hl7v2_ordering_key("SYNTH-HOSP", raw, seps) == f"SYNTH-HOSP/Patient/{SYNTH_LOCAL_ID}"
    with_ins = raw.replace(
        f"{SYNTH_LOCAL_ID}^^^SYNTH-HOSP^PI".encode(),
        f"{SYNTH_LOCAL_ID}^^^SYNTH-HOSP^PI~1234567890123^^^ASIP&{INS[8:]}&ISO^INS".encode(),
    )
    assert hl7v2_ordering_key("SYNTH-HOSP", with_ins, seps) == "1234567890123"
    no_pid = b"MSH|^~\\&|A|B|C|D|20240315||ADT^A01|X1|P|2.5\rEVN|A01|20240315\r"
    assert hl7v2_ordering_key("SYNTH-HOSP", no_pid, Separators()) is None
    empty_pid3 = no_pid + b"PID|1||\r"
    assert hl7v2_ordering_key("SYNTH-HOSP", empty_pid3, Separators()) is None
