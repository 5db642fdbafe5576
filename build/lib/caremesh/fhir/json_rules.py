"""FHIR's JSON representation rules that a parser and fhir.resources let through.

From FHIR R4 (4.0.1) and R5 (5.0.0) §2.6.2 "JSON Representation of Resources", as a strict
server (HAPI FHIR) enforces them:

- an object never repeats a key (`duplicate-key`): JSON parsers, orjson included, keep the last
  value silently, so a Bundle could say `"status":"final","status":"amended"` and reach a
  recipient meaning something else than the sender's validator read;
- no empty object, array or string anywhere (`empty-element`): an element is present with a
  value or absent;
- a `urn:oid:` value (an identifier or coding `system`, a reference, a fullUrl, a url) is
  followed by an OID (`invalid-oid`: digits separated by dots, first arc 0-2, no leading zero);
- a Bundle has at most `MAX_BUNDLE_ENTRIES` entries (`too-many-entries`; larger exports go
  through bulk NDJSON import).

The entry limit is checked before model validation, the other rules after it (so that paths
only ever hold element names). The duplicate check is cheap on valid input: the keys of the
parsed objects are counted while the tree is walked for the other rules, and compared with the
number of object keys in the bytes (one regular-expression scan); only when they differ is the
body parsed again with `json`'s `object_pairs_hook` to name the objects that repeat a key.
Issues name the element (FHIRPath-like, a key that is not an element name shown as `?`), never
a value.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from caremesh.errors import FhirIssue, InvalidFhirError

ERROR_CODES: Final = ("duplicate-key", "empty-element", "invalid-oid", "too-many-entries")
"""Every code `InvalidFhirError` is raised with by this module."""

MAX_BUNDLE_ENTRIES: Final = 20_000
"""The most entries a Bundle may have (a Synthea patient's whole history fits)."""

MAX_ISSUES: Final = 20
"""Issues reported per message; the walk stops there."""

_STRING_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"(\s*:)?')
_OID = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+")
_OID_KEYS: Final = frozenset({"system", "reference", "fullUrl", "url", "value"})
_ELEMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_EMPTY_OBJECT = re.compile(rb"\{\s*\}")
_EMPTY_ARRAY = re.compile(rb"\[\s*\]")
_OID_TEXT = re.compile(rb'"urn:oid:([^"]*)"')
_SPACED_COLON = re.compile(rb'"\s+:')
_ESCAPED_QUOTE_OR_COLON = re.compile(rb"\\u00(?:22|3[aA])")
_OID_BYTES = re.compile(rb"[0-2](?:\.(?:0|[1-9][0-9]*))+")


def check_bundle_size(obj: Any) -> None:
    """Raise InvalidFhirError for a Bundle above MAX_BUNDLE_ENTRIES entries or with empty ones.

    Cheap, so it runs before model validation: a hostile Bundle costs no validation.
    """
    if not isinstance(obj, dict) or obj.get("resourceType") != "Bundle":
        return
    entries = obj.get("entry")
    if not isinstance(entries, list):
        return
    if len(entries) > MAX_BUNDLE_ENTRIES:
        text = f"has more than {MAX_BUNDLE_ENTRIES} entries"
        issue = FhirIssue("too-many-entries", "Bundle.entry", text)
        raise InvalidFhirError(issue.code, f"Bundle.entry {text}", (issue,))
    empty = [
        FhirIssue("empty-element", f"Bundle.entry[{index}]", "is an empty object")
        for index, entry in enumerate(entries)
        if entry == {}
    ][:MAX_ISSUES]
    if empty:
        more = f" (+{len(empty) - 1} more)" if len(empty) > 1 else ""
        detail = f"{empty[0].expression} is an empty object{more}"
        raise InvalidFhirError("empty-element", detail, tuple(empty))


def check_json_rules(body: bytes, obj: dict[str, Any]) -> None:
    """Raise InvalidFhirError (codes: ERROR_CODES) when `obj`, parsed from `body`, breaks a rule.

    `obj` must already have passed model validation, so its keys are element names (a path
    never shows sender text). The error's `issues` hold one FhirIssue per element at fault (at
    most MAX_ISSUES).
    """
    root = str(obj.get("resourceType"))
    walk = _Walk()
    if _may_break_value_rules(body):
        walk.node(obj, root)
    if not walk.issues and _may_repeat_a_key(body, obj):
        walk.issues.extend(_duplicate_issues(body, root))
    if walk.issues:
        first = walk.issues[0]
        more = f" (+{len(walk.issues) - 1} more)" if len(walk.issues) > 1 else ""
        raise InvalidFhirError(
            first.code, f"{first.expression} {first.detail}{more}", tuple(walk.issues)
        )


class _Walk:
    """One pass over the parsed tree: empty values, OIDs, and the number of object keys."""

    def __init__(self) -> None:
        self.keys = 0
        self.issues: list[FhirIssue] = []

    def node(self, value: Any, path: str) -> None:
        if len(self.issues) >= MAX_ISSUES:
            return
        if isinstance(value, dict):
            if not value:
                self._empty(path, "is an empty object")
                return
            self.keys += len(value)
            for key, child in value.items():
                if isinstance(child, str):
                    if not child:
                        self._empty(f"{path}.{_name(key)}", "is an empty string")
                    elif (
                        key in _OID_KEYS
                        and child.startswith("urn:oid:")
                        and not _OID.fullmatch(child[8:])
                    ):
                        text = "is urn:oid: followed by something that is not an OID"
                        self.issues.append(FhirIssue("invalid-oid", f"{path}.{_name(key)}", text))
                elif isinstance(child, dict | list):
                    self.node(child, f"{path}.{_name(key)}")
        elif isinstance(value, list):
            if not value:
                self._empty(path, "is an empty array")
                return
            for index, child in enumerate(value):
                if isinstance(child, dict | list):
                    self.node(child, f"{path}[{index}]")
                elif child == "":
                    self._empty(f"{path}[{index}]", "is an empty string")

    def _empty(self, path: str, text: str) -> None:
        self.issues.append(FhirIssue("empty-element", path, text))


def _may_break_value_rules(body: bytes) -> bool:
    """False when the bytes show no empty value and no malformed `urn:oid:` (then the tree walk
    is skipped). An empty object, array or string can only be written `{}`, `[]` (whitespace
    inside allowed) or `""`; such text inside a string only costs the walk."""
    if b'""' in body or _EMPTY_OBJECT.search(body) or _EMPTY_ARRAY.search(body):
        return True
    if b"urn:oid:" not in body:
        return False
    return any(_OID_BYTES.fullmatch(oid) is None for oid in _OID_TEXT.findall(body))


def _may_repeat_a_key(body: bytes, obj: dict[str, Any]) -> bool:
    """False when the body provably repeats no key; True means: look with the slow parser.

    orjson writes each key once, followed directly by `":`; a quote inside a string is written
    as a backslash and a quote, so a `":` inside a string value appears in both texts alike.
    When the body has no whitespace between a key and its colon and spells no quote or colon
    as a backslash-u escape (JSON's only other spellings of the two), it repeats a key exactly
    when it holds more `":` than orjson's text of the parsed tree (where repeats are gone).
    """
    if _ESCAPED_QUOTE_OR_COLON.search(body) or _SPACED_COLON.search(body):
        return _object_keys_in(body) != _key_count(obj)
    return body.count(b'":') != orjson.dumps(obj).count(b'":')


def _key_count(obj: Any) -> int:
    """The number of object keys in a parsed tree."""
    if isinstance(obj, dict):
        return len(obj) + sum(_key_count(v) for v in obj.values() if isinstance(v, dict | list))
    if isinstance(obj, list):
        return sum(_key_count(v) for v in obj if isinstance(v, dict | list))
    return 0


def _name(key: str) -> str:
    return key if _ELEMENT.fullmatch(key) else "?"


def _object_keys_in(body: bytes) -> int:
    """How many object keys the JSON text holds (strings followed by a colon)."""
    colons = _STRING_TOKEN.findall(body)
    return len(colons) - colons.count(b"")


class _Repeated(dict[str, Any]):
    """A parsed object that repeated at least one key."""

    __slots__ = ("repeated",)

    repeated: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    repeated: list[str] = []
    for key, value in pairs:
        if key in out:
            repeated.append(key)
        out[key] = value
    if not repeated:
        return out
    marked = _Repeated(out)
    marked.repeated = repeated
    return marked


def _duplicate_issues(body: bytes, root: str) -> list[FhirIssue]:
    """The objects of `body` that repeat a key (the slow path, taken only when one does)."""
    try:
        tree = json.loads(body, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):
        return [FhirIssue("duplicate-key", root, "repeats a key in one object")]
    issues: list[FhirIssue] = []
    stack: list[tuple[Any, str]] = [(tree, root)]
    while stack and len(issues) < MAX_ISSUES:
        value, path = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Repeated):
                for key in dict.fromkeys(value.repeated):
                    issues.append(
                        FhirIssue("duplicate-key", f"{path}.{_name(key)}", "appears twice")
                    )
            stack.extend((child, f"{path}.{_name(key)}") for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, f"{path}[{index}]") for index, child in enumerate(value))
    return issues
