"""Validate docker-compose.yml, deploy/k8s/ and the monitoring files offline.

Compose and Kubernetes documents are checked against the JSON schemas in deploy/schemas/
(subsets of the compose specification, Kubernetes apps/v1 and v1, and Strimzi v1beta2 written
for caremesh, strict on unknown keys). Then cross-checks: every Deployment's Kafka principal
has a KafkaUser, deploy/k8s/strimzi.yaml matches `caremesh k8s topics`, alert rules and the
Grafana dashboard use only metrics that src/caremesh/metrics.py defines. Exit 1 on any problem.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft7Validator

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "deploy" / "schemas"
KIND_SCHEMA = {
    "Deployment": "k8s-deployment.json",
    "Service": "k8s-service.json",
    "ConfigMap": "k8s-configmap.json",
    "KafkaTopic": "strimzi-kafkatopic.json",
    "KafkaUser": "strimzi-kafkauser.json",
}
REQUIRED_ALERTS = {
    "CaremeshServiceDown",
    "CaremeshDeadLettersRising",
    "CaremeshConsumerLag",
    "CaremeshDeliveryFailing",
}


def _validator(name: str) -> Draft7Validator:
    return Draft7Validator(json.loads((SCHEMAS / name).read_text()))


def _errors(validator: Draft7Validator, doc: Any, where: str) -> list[str]:
    return [
        f"{where}: {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def check_compose() -> list[str]:
    doc = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return _errors(_validator("compose.json"), doc, "docker-compose.yml")


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc is not None:
                docs.append((f"{path.relative_to(ROOT)}#{i}", doc))
    return docs


def check_k8s() -> list[str]:
    problems = []
    docs = k8s_documents()
    validators = {kind: _validator(name) for kind, name in KIND_SCHEMA.items()}
    for where, doc in docs:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind not in validators:
            problems.append(f"{where}: no schema for kind {kind!r}")
            continue
        problems += _errors(validators[kind], doc, where)
    users = {d["metadata"]["name"] for _, d in docs if d.get("kind") == "KafkaUser"}
    for where, doc in docs:
        if doc.get("kind") != "Deployment":
            continue
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] == "CAREMESH_KAFKA__USERNAME" and env.get("value") not in users:
                    problems.append(f"{where}: principal {env.get('value')} has no KafkaUser")
    return problems


def check_strimzi_generated() -> list[str]:
    sys.path.insert(0, str(ROOT / "src"))
    from caremesh.security.commands import k8s_topics  # noqa: PLC0415
    from caremesh.settings import Settings  # noqa: PLC0415

    settings = Settings(
        kafka={"replication_factor": 3, "partitions": 6, "topic_prefix": ""},
        organisations=[],
        studies=[],
    )
    want = k8s_topics(settings, cluster="caremesh")
    if (ROOT / "deploy" / "k8s" / "strimzi.yaml").read_text() != want:
        return [
            "deploy/k8s/strimzi.yaml is stale: regenerate it with "
            "`CAREMESH_KAFKA__REPLICATION_FACTOR=3 caremesh k8s topics > deploy/k8s/strimzi.yaml`"
        ]
    return []


def check_monitoring() -> list[str]:
    problems = []
    defined = set(
        re.findall(r'"(caremesh_[a-z_]+)"', (ROOT / "src/caremesh/metrics.py").read_text())
    )
    histograms = {f"{m}_bucket" for m in defined if m.endswith("_seconds")}
    known = defined | histograms
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {job["job_name"] for job in prom["scrape_configs"]}
    for job in ("worker", "ingest-api", "consent-api", "delivery", "inbox"):
        if f"caremesh-{job}" not in jobs:
            problems.append(f"prometheus.yml: no scrape job for caremesh-{job}")
    alerts = yaml.safe_load((ROOT / "deploy/prometheus/alerts.yml").read_text())
    rules = [r for group in alerts["groups"] for r in group["rules"]]
    missing = REQUIRED_ALERTS - {r["alert"] for r in rules}
    if missing:
        problems.append(f"alerts.yml: missing {', '.join(sorted(missing))}")
    exprs = [("alerts.yml " + r["alert"], r["expr"]) for r in rules]
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/caremesh.json").read_text())
    exprs += [
        (f"caremesh.json panel {p['title']!r}", t["expr"])
        for p in dashboard["panels"]
        for t in p["targets"]
    ]
    for where, expr in exprs:
        for metric in re.findall(r"\bcaremesh_[a-z_]+", expr):
            if metric not in known:
                problems.append(f"{where}: unknown metric {metric}")
    return problems


def main() -> int:
    problems = check_compose() + check_k8s() + check_strimzi_generated() + check_monitoring()
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check-deploy: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("check-deploy: docker-compose.yml, deploy/k8s/, prometheus and grafana files are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
