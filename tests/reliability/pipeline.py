"""Synthetic resources, a concurrent HTTP sender that records every answer, and process helpers."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

from tests.reliability.support import INS, wait_http
from tests.support.kafka import Namespace, Proc, free_port, worker_ready

TOKEN = "tok-synth-reliability-7c41"
SOURCES = json.dumps([{"id": "hosp-r", "token": TOKEN}])
STUDIES = json.dumps([{"id": "study-b", "purpose": "PUBHLTH", "consent_default": "permit"}])
MASTER_KEY = "0f" * 32  # synthetic test key


def patient_ins(p: int) -> str:
    return f"2990175{p:06d}"


def observation(i: int, patient: int, value: float = 72.0) -> dict[str, object]:
    """A valid synthetic body-weight Observation, `obs-<i>`, of one patient."""
    return {
        "resourceType": "Observation",
        "id": f"obs-{i}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
        "subject": {"identifier": {"system": INS, "value": patient_ins(patient)}},
        "effectiveDateTime": "2026-03-02T10:00:00+01:00",
        "valueQuantity": {
            "value": value,
            "unit": "kg",
            "system": "http://unitsofmeasure.org",
            "code": "kg",
        },
    }


@dataclass
class Answer:
    index: int
    status: int  # 0: transport error or client timeout
    started: float
    ended: float


@dataclass
class Sender:
    """Posts `obs-<i>` for i in a range over HTTP from several threads, retrying until 202.

    Every answer is recorded with its start and end time; a resource counts as acknowledged
    when one of its requests got 202. The Idempotency-Key is the resource id, so a retry after
    503 carries the same ce_id."""

    url: str
    patients: int
    threads: int = 4
    answers: list[Answer] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self, indices: range, pace: float = 0.0) -> None:
        chunks = [indices[k :: self.threads] for k in range(self.threads)]
        for chunk in chunks:
            t = threading.Thread(target=self._run, args=(chunk, pace), daemon=True)
            t.start()
            self._workers.append(t)

    def _run(self, chunk: range, pace: float) -> None:
        with httpx.Client(timeout=40) as client:
            for i in chunk:
                if self._stop.is_set():
                    break
                body = orjson.dumps(observation(i, i % self.patients))
                while not self._stop.is_set():
                    started = time.monotonic()
                    try:
                        r = client.post(
                            f"{self.url}/fhir/Observation",
                            content=body,
                            headers={
                                "Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/fhir+json",
                                "Idempotency-Key": f"obs-{i}",
                            },
                        )
                        status = r.status_code
                    except httpx.TransportError:
                        status = 0
                    with self._lock:
                        self.answers.append(Answer(i, status, started, time.monotonic()))
                        if status == 202:
                            self.acked.add(i)
                    if status == 202:
                        break
                    assert status in (0, 503), f"unexpected HTTP {status}"
                    time.sleep(0.5)
                if pace:
                    time.sleep(pace)

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self._stop.set()
        for t in self._workers:
            t.join(45)

    def stop(self, timeout: float = 45.0) -> None:
        """End the load: each thread finishes its current request (a 202 still counts) and
        sends no more."""
        self._stop.set()
        for t in self._workers:
            t.join(timeout)

    def count(self, status: int) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.status == status)


def start_ingest_api(spawn: Callable[..., Proc], ns: Namespace, **extra: str) -> tuple[Proc, str]:
    port = free_port()
    proc = spawn(
        "ingest-api",
        ["ingest-api"],
        ns.env(CAREMESH_SOURCES=SOURCES, CAREMESH_HTTP_INGEST__PORT=str(port), **extra),
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/metrics")
    return proc, url


def start_worker(
    spawn: Callable[..., Proc],
    ns: Namespace,
    stages: list[str],
    data_dir: Path,
    **extra: str,
) -> Proc:
    port = free_port()
    args = ["worker"]
    for stage in stages:
        args += ["--stage", stage]
    proc = spawn(
        "worker",
        args,
        ns.env(
            CAREMESH_WORKER__WEB_PORT=str(port),
            CAREMESH_WORKER__DATA_DIR=str(data_dir),
            **extra,
        ),
    )
    proc.port = port
    worker_ready(proc, port, timeout=180)
    return proc


@dataclass
class PatientSender:
    """Posts each patient's resources over HTTP strictly in order: one thread owns a patient, and
    sends its next resource only after the previous one got 202 (retrying 503 and transport
    errors with the same Idempotency-Key). So the order of 202s per patient is the send order,
    which the ingest partition (chosen by patient) must keep."""

    url: str
    streams: dict[int, list[dict[str, object]]]
    threads: int = 4
    pace: list[float] = field(default_factory=lambda: [0.0])
    """Seconds between two requests of one thread; a list so a test can change it mid-stream."""
    sent: list[int] = field(default_factory=lambda: [0])
    statuses: dict[int, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(len(s) for s in self.streams.values())

    def start(self) -> None:
        patients = sorted(self.streams)
        for k in range(self.threads):
            owned = patients[k :: self.threads]
            t = threading.Thread(target=self._run, args=(owned,), daemon=True)
            t.start()
            self._workers.append(t)

    def _run(self, owned: list[int]) -> None:
        longest = max((len(self.streams[p]) for p in owned), default=0)
        queue = [
            self.streams[p][i] for i in range(longest) for p in owned if i < len(self.streams[p])
        ]
        with httpx.Client(timeout=40) as client:
            for resource in queue:
                body = orjson.dumps(resource)
                for _ in range(600):
                    try:
                        r = client.post(
                            f"{self.url}/fhir/{resource['resourceType']}",
                            content=body,
                            headers={
                                "Authorization": f"Bearer {TOKEN}",
                                "Content-Type": "application/fhir+json",
                                "Idempotency-Key": str(resource["id"]),
                            },
                        )
                        status = r.status_code
                    except httpx.TransportError:
                        status = 0
                    with self._lock:
                        self.statuses[status] = self.statuses.get(status, 0) + 1
                    if status == 202:
                        break
                    assert status in (0, 503), f"unexpected HTTP {status}"
                    time.sleep(0.5)
                else:
                    raise AssertionError("a resource was never acknowledged")
                with self._lock:
                    self.sent[0] += 1
                if self.pace[0]:
                    time.sleep(self.pace[0])

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._workers), "the senders did not finish"
