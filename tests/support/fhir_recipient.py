"""A recipient's FHIR server stand-in that judges like a strict one (until a real HAPI fixture).

In memory, FHIR R4 REST semantics for what delivery uses: `PUT {type}/{id}` (update as create),
`POST {type}` (server-assigned id), and `POST /` with a transaction Bundle (entries applied
atomically; conditional updates `{type}?identifier=system|value`; `urn:uuid:` fullUrls and
conditional references resolved). Referential integrity is enforced like HAPI's JPA server: a
literal relative reference to a resource the server does not hold is refused with 422 (a
conditional reference matching nothing, with 412), nothing written.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

_JSON = "application/fhir+json"


class RefusedError(Exception):
    """A request the server refuses, with its HTTP status."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _references(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for v in value:
            yield from _references(v)
    elif isinstance(value, dict):
        if isinstance(value.get("reference"), str):
            yield value
        for v in value.values():
            yield from _references(v)


def identifier_values(resource: dict[str, Any], system: str) -> list[str]:
    """The values of a resource's identifiers of one system."""
    return [
        str(i.get("value"))
        for i in resource.get("identifier") or []
        if isinstance(i, dict) and i.get("system") == system
    ]


def source_id(resource: dict[str, Any]) -> str | None:
    """The source's own id of a delivered resource (its `urn:caremesh:source:` identifier)."""
    for item in resource.get("identifier") or []:
        if isinstance(item, dict) and str(item.get("system", "")).startswith(
            "urn:caremesh:source:"
        ):
            return str(item.get("value"))
    return None


@dataclass
class FhirRecipient:
    """The server's resources (`Type/id` → resource) and every request it answered."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)
    """`Type/id` of every write, in order."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def of_type(self, rtype: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for k, r in self.resources.items() if k.startswith(f"{rtype}/")]

    def refused(self) -> list[tuple[str, str, int]]:
        with self.lock:
            return [r for r in self.requests if r[2] >= 400]

    def search(self, store: dict[str, dict[str, Any]], query: str) -> list[str]:
        rtype, _, params = query.partition("?")
        name, _, value = params.partition("=")
        if name != "identifier":
            raise RefusedError(400)
        system, _, ident = unquote(value).partition("|")
        return [
            k
            for k, r in store.items()
            if k.startswith(f"{rtype}/") and ident in identifier_values(r, system)
        ]

    def _check(self, store: dict[str, dict[str, Any]], resource: dict[str, Any]) -> None:
        for ref in _references(resource):
            target = ref["reference"]
            if target.startswith(("#", "urn:", "http:", "https:")):
                continue
            if target not in store:
                raise RefusedError(422)

    def _put(self, store: dict[str, dict[str, Any]], rtype: str, rid: str, resource: Any) -> str:
        if not isinstance(resource, dict) or resource.get("resourceType") != rtype:
            raise RefusedError(400)
        resource = {**resource, "id": rid}
        self._check(store, resource)
        store[f"{rtype}/{rid}"] = resource
        return f"{rtype}/{rid}"

    def _new_id(self) -> str:
        return f"srv{next(self._ids)}"

    def transaction(self, bundle: Any) -> list[str]:
        if not isinstance(bundle, dict) or bundle.get("type") != "transaction":
            raise RefusedError(400)
        store = dict(self.resources)
        entries = bundle.get("entry") or []
        resolved: dict[str, str] = {}
        plans: list[tuple[str, str, dict[str, Any]]] = []
        for entry in entries:  # ids first: references between entries resolve to them
            request, resource = entry["request"], entry["resource"]
            url = request["url"]
            rtype = resource["resourceType"]
            if request["method"] == "PUT" and "?" in url:
                found = self.search(store, url)
                if len(found) > 1:
                    raise RefusedError(412)
                rid = found[0].partition("/")[2] if found else self._new_id()
            elif request["method"] == "PUT":
                rid = url.partition("/")[2]
            else:
                rid = self._new_id()
            if "fullUrl" in entry:
                resolved[entry["fullUrl"]] = f"{rtype}/{rid}"
            plans.append((rtype, rid, resource))
        for rtype, rid, _resource in plans:  # the Bundle's own resources count as held
            store.setdefault(f"{rtype}/{rid}", {"resourceType": rtype, "id": rid})
        written = []
        for rtype, rid, resource in plans:
            for ref in _references(resource):
                target = ref["reference"]
                if target in resolved:
                    ref["reference"] = resolved[target]
                elif "?" in target:
                    found = self.search(store, target)
                    if len(found) != 1:
                        raise RefusedError(412)
                    ref["reference"] = found[0]
            written.append(self._put(store, rtype, rid, resource))
        self.resources = store
        return written

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.api_route("/fhir", methods=["POST"])
        async def system(request: Request) -> Response:
            return await receive("", request)

        @app.api_route("/fhir/{path:path}", methods=["PUT", "POST"])
        async def receive(path: str, request: Request) -> Response:
            body = orjson.loads(await request.body())
            parts = [p for p in path.split("/") if p]
            with self.lock:
                try:
                    if request.method == "POST" and not parts:
                        written = self.transaction(body)
                    elif request.method == "POST" and len(parts) == 1:
                        store = dict(self.resources)
                        written = [self._put(store, parts[0], self._new_id(), body)]
                        self.resources = store
                    elif request.method == "PUT" and len(parts) == 2:
                        store = dict(self.resources)
                        written = [self._put(store, parts[0], parts[1], body)]
                        self.resources = store
                    else:
                        raise RefusedError(400)
                except RefusedError as exc:
                    self.requests.append((request.method, path, exc.status))
                    return JSONResponse({"resourceType": "OperationOutcome"}, exc.status)
                self.requests.append((request.method, path, 200))
                self.writes.extend(written)
            return Response(orjson.dumps({"written": written}), 200, media_type=_JSON)

        return app
