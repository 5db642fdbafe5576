"""Client security options, the secured broker's properties, Strimzi resources and the record."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from caremesh.errors import ConfigurationError
from caremesh.kafka import local_layout
from caremesh.kafka import local_secured as broker
from caremesh.kafka.config import aiokafka_security, confluent_security
from caremesh.security.acl import AclRule, Op, Pattern, Resource
from caremesh.security.apply import plan_acls
from caremesh.security.commands import gdpr_record, k8s_topics
from caremesh.settings import KafkaSettings, OrganisationSettings, Settings, StudySettings

TEMPLATE = (KafkaSettings().local_home / "server-secured.properties.in").read_text()
NODE = local_layout.NodeLayout(1, 19092, 19093, Path("/data"))


def _sasl(**extra: object) -> KafkaSettings:
    values: dict[str, object] = {
        "security_protocol": "SASL_PLAINTEXT",
        "username": "caremesh-validate",
        "password": SecretStr("s3cret-pass"),
        **extra,
    }
    return KafkaSettings.model_validate(values)


def test_plaintext_adds_nothing() -> None:
    kafka = KafkaSettings()
    assert confluent_security(kafka) == {}
    assert aiokafka_security(kafka) == {}


def test_sasl_options_in_each_client_library() -> None:
    kafka = _sasl()
    assert confluent_security(kafka) == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "caremesh-validate",
        "sasl.password": "s3cret-pass",
    }
    aio = aiokafka_security(kafka)
    assert aio["sasl_plain_username"] == "caremesh-validate"
    assert aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert "ssl_context" not in aio


def test_sasl_ssl_uses_the_ca_file(tmp_path: Path) -> None:
    import certifi  # httpx depends on it: a CA bundle that is surely there

    cafile = Path(certifi.where())
    kafka = _sasl(security_protocol="SASL_SSL", ssl_cafile=cafile)
    assert confluent_security(kafka)["ssl.ca.location"] == str(cafile)
    assert aiokafka_security(kafka)["ssl_context"] is not None


def test_sasl_without_password_is_a_configuration_error() -> None:
    kafka = KafkaSettings(security_protocol="SASL_SSL", username="x")
    with pytest.raises(ConfigurationError, match="PASSWORD"):
        confluent_security(kafka)


def _props(text: str) -> dict[str, str]:
    lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def test_secured_properties_deny_by_default_with_sasl_on_both_listeners() -> None:
    props = _props(
        broker.secured_properties(
            TEMPLATE,
            node_values=local_layout.node_values(NODE, [NODE]),
            broker_password="broker-pass-1",
            admin_user="caremesh-admin",
        )
    )
    assert (
        props["listener.security.protocol.map"] == "CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT"
    )
    assert props["listener.name.client.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["super.users"] == "User:caremesh-broker;User:caremesh-admin"
    assert "ANONYMOUS" not in props["super.users"]
    assert "PLAINTEXT://" not in props["listeners"]
    assert not any("@" in v and k != "controller.quorum.voters" for k, v in props.items())


def test_tls_switches_the_client_listener_to_sasl_ssl() -> None:
    tls = broker.TlsFiles(Path("/k/broker.p12"), Path("/k/trust.p12"), "store-pass-1")
    props = _props(
        broker.secured_properties(
            TEMPLATE,
            node_values=local_layout.node_values(NODE, [NODE]),
            broker_password="broker-pass-1",
            admin_user="a",
            tls=tls,
        )
    )
    assert props["listener.security.protocol.map"].startswith("CLIENT:SASL_SSL,")
    assert props["listener.name.client.ssl.keystore.location"] == "/k/broker.p12"
    assert props["listener.name.client.ssl.truststore.location"] == "/k/trust.p12"


@pytest.mark.parametrize("password", ['has"quote', "has,comma", "short", "sp ace-long", "a]b=c[d1"])
def test_unsafe_passwords_are_refused_without_being_echoed(password: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        broker.scram_format_args({"u": password})
    assert password not in str(info.value)


def test_format_args_add_one_scram_credential_per_user() -> None:
    args = broker.scram_format_args({"b": "pass-word-2", "a": "pass-word-1"})
    assert args == [
        "--add-scram",
        "SCRAM-SHA-512=[name=a,password=pass-word-1]",
        "--add-scram",
        "SCRAM-SHA-512=[name=b,password=pass-word-2]",
    ]


def _rule(name: str, principal: str = "User:a") -> AclRule:
    return AclRule(principal, Resource.TOPIC, name, Pattern.LITERAL, Op.READ)


def test_plan_creates_only_what_is_missing_and_prunes_only_managed_users() -> None:
    plan = plan_acls(
        [_rule("x"), _rule("y")],
        [_rule("x"), _rule("old"), _rule("z", "User:other")],
        ["User:a"],
        prune=True,
    )
    assert plan.create == (_rule("y"),)
    assert plan.present == (_rule("x"),)
    assert plan.delete == (_rule("old"),)
    assert plan_acls([_rule("x")], [_rule("old")], ["User:a"]).delete == ()


def _settings() -> Settings:
    return Settings(
        organisations=[OrganisationSettings(id="hosp-a", fhir_endpoint="http://a.example")],
        studies=[StudySettings(id="hf", retention_days=90)],
    )


def test_strimzi_resources_cover_every_topic_and_principal() -> None:
    docs = list(yaml.safe_load_all(k8s_topics(_settings(), cluster="prod", namespace="cm")))
    topics = {d["spec"]["topicName"]: d for d in docs if d["kind"] == "KafkaTopic"}
    users = {d["metadata"]["name"]: d for d in docs if d["kind"] == "KafkaUser"}
    assert topics["research.hf.v1"]["spec"]["config"]["retention.ms"] == str(90 * 86_400_000)
    assert topics["keys.patient.v1"]["spec"]["config"]["cleanup.policy"] == "compact"
    assert {d["metadata"]["labels"]["strimzi.io/cluster"] for d in docs} == {"prod"}
    study = users["study-hf"]["spec"]
    assert study["authentication"] == {"type": "scram-sha-512"}
    assert study["authorization"]["acls"][1] == {
        "resource": {"type": "topic", "name": "research.hf.v1", "patternType": "literal"},
        "operations": ["Describe", "Read"],
        "host": "*",
    }
    assert "org-hosp-a" in users
    assert "caremesh-admin" in users


def test_gdpr_record_names_purpose_recipients_and_retention() -> None:
    text = gdpr_record(_settings())
    line = next(ln for ln in text.splitlines() if ln.startswith("| `research.hf.v1`"))
    assert "HRESCH" in line
    assert "study-hf" in line
    assert "90 days" in line
    assert "caremesh-share" not in line
    audit = next(ln for ln in text.splitlines() if ln.startswith("| `audit.v1`"))
    assert "caremesh-auditor" in audit
    assert "study" not in audit
