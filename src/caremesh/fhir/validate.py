"""Parse FHIR JSON with orjson and validate it with fhir.resources (FHIR R4B 4.3.0 and R5 5.0.0).

Release rule: an explicit release (a Content-Type `fhirVersion=` parameter or the source's
configuration) wins: `R4`/`4.0` and `R4B`/`4.3` validate with the R4B models (R4 payloads go
through R4B, and keep the label `R4`), `R5`/`5.0` with the R5 models. Without one, the payload is
tried as R4B first and then as R5, and is labelled with the first release that accepts it.

A resource that passes the models is then checked against the required value-set bindings of
its release (`caremesh.fhir.bindings`, code `invalid-code`); when no release is explicit, a
payload whose codes belong to the other release's value sets (an R5 Encounter status) is
labelled with the release that accepts it. It is last checked against the datatype rules a
strict server enforces and the models do not (`caremesh.fhir.datatypes`: UCUM units, codes of
complete HL7 code systems, strict base64 and Attachment hashes, absolute canonical URLs), which
are the same in every release; the rejection's code is that of its first issue.

A Bundle is validated as its shell (everything but `entry[].resource`) plus one validation per
entry resource with the model of that entry's `resourceType`. This checks the same elements as
validating the whole Bundle model, costs about half of it (fhir.resources validates a nested
resource through a slower generic path), and lets each entry be checked once.

Error details name the resource type, element paths and pydantic error types, never a value:
pydantic errors are read with `include_input=False`, message texts are not used, the key of an
unknown element is shown as `<unknown>`, and path segments that do not look like element names
are replaced by `?`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from fhir.resources import get_fhir_model_class as _r5_model_class
from fhir.resources.R4B import get_fhir_model_class as _r4b_model_class
from pydantic import ValidationError

from caremesh.errors import FhirIssue, InvalidFhirError
from caremesh.fhir import fhir_core_fix  # noqa: F401 - installs itself before any model exists
from caremesh.fhir.bindings import BindingFamily, binding_issues
from caremesh.fhir.datatypes import ERROR_CODES as DATATYPE_CODES
from caremesh.fhir.datatypes import datatype_issues
from caremesh.fhir.datatypes import warm_up as datatypes_warm_up

Release = Literal["R4", "R4B", "R5"]
Family = Literal["R4B", "R5"]

ERROR_CODES: Final = (
    "empty-body",
    "invalid-utf8",
    "invalid-json",
    "too-deep",
    "not-an-object",
    "missing-resource-type",
    "unknown-resource-type",
    "unsupported-release",
    "validation-failed",
    "invalid-code",
    *DATATYPE_CODES,
)
"""Every code `InvalidFhirError` is raised with by this module."""

MAX_ERRORS_SHOWN: Final = 8

_RELEASES: Final[Mapping[str, Release]] = {
    "r4": "R4",
    "4.0": "R4",
    "4.0.0": "R4",
    "4.0.1": "R4",
    "r4b": "R4B",
    "4.3": "R4B",
    "4.3.0": "R4B",
    "r5": "R5",
    "5.0": "R5",
    "5.0.0": "R5",
}
_FAMILY: Final[Mapping[Release, Family]] = {"R4": "R4B", "R4B": "R4B", "R5": "R5"}
_ABSTRACT: Final = frozenset(
    {"Resource", "DomainResource", "CanonicalResource", "MetadataResource"}
)
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{1,63}")
_ELEMENT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_ERROR_TYPE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True, slots=True)
class ValidResource:
    """A resource (or Bundle) that passed validation, and the release it is labelled with."""

    resource_type: str
    release: Release


def parse_json(value: bytes) -> Any:
    """Parse JSON bytes with orjson, raising InvalidFhirError with a code for what cannot be read.

    orjson accepts at most 1024 levels of nesting (`too-deep`) and only valid UTF-8
    (`invalid-utf8`); the happy path costs one `orjson.loads`.
    """
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _decode_error(value, exc) from None


def _decode_error(value: bytes, exc: orjson.JSONDecodeError) -> InvalidFhirError:
    """Classify an orjson failure without ever quoting the input."""
    if not value.strip():
        return InvalidFhirError("empty-body", "the body is empty")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as bad:
        return InvalidFhirError("invalid-utf8", f"invalid UTF-8 at byte {bad.start}")
    text = str(exc.msg).lower()
    if "depth" in text or "recursion" in text:
        return InvalidFhirError("too-deep", "JSON nesting exceeds 1024 levels")
    if "utf-8" in text or "surrogate" in text:
        return InvalidFhirError("invalid-utf8", f"invalid UTF-8 or surrogate at char {exc.pos}")
    return InvalidFhirError("invalid-json", f"not JSON (line {exc.lineno}, column {exc.colno})")


def normalise_release(release: str | None) -> Release | None:
    """`R4`, `R4B`, `R5` or a FHIR version number (`4.0.1`, `4.3`, `5.0.0`) as a Release."""
    if release is None or not release.strip():
        return None
    found = _RELEASES.get(release.strip().lower())
    if found is None:
        raise InvalidFhirError("unsupported-release", "supported releases are R4, R4B and R5")
    return found


def release_from_content_type(content_type: str | None) -> Release | None:
    """The release named by a `fhirVersion=` Content-Type parameter, or None when absent."""
    if not content_type:
        return None
    for part in content_type.split(";")[1:]:
        name, _, raw = part.partition("=")
        if name.strip().lower() == "fhirversion":
            return normalise_release(raw.strip().strip('"'))
    return None


def model_class(resource_type: str, family: Family) -> Any | None:
    """The fhir.resources model class of a concrete resource type, or None if there is none."""
    if not _TYPE_NAME.fullmatch(resource_type) or resource_type in _ABSTRACT:
        return None
    lookup = _r5_model_class if family == "R5" else _r4b_model_class
    try:
        klass = lookup(resource_type)
    except ValueError:
        return None
    return klass if klass.has_resource_base() else None


def validate_resource(
    obj: object, release: str | None, *, body: bytes | None = None
) -> ValidResource:
    """Validate a parsed FHIR resource or Bundle; raise InvalidFhirError(code, detail) if not valid.

    `release` is the explicit release if one is known (it wins), else None to try R4B then R5.
    `body`, the bytes `obj` was parsed from, lets the datatype rules skip what they cannot find.
    """
    if not isinstance(obj, dict):
        raise InvalidFhirError("not-an-object", "a FHIR resource must be a JSON object")
    resource_type = obj.get("resourceType")
    if not isinstance(resource_type, str):
        raise InvalidFhirError("missing-resource-type", "resourceType is missing or not a string")
    explicit = normalise_release(release)
    families: tuple[Family, ...] = (_FAMILY[explicit],) if explicit else ("R4B", "R5")
    failures: list[tuple[Family, list[str]]] = []
    codes: list[tuple[Family, list[FhirIssue]]] = []
    for position, family in enumerate(families):
        klass = model_class(resource_type, family)
        if klass is None:
            continue
        stop_early = position < len(families) - 1
        errors = _validation_errors(obj, klass, family, stop_early=stop_early)
        if not errors:
            issues = _binding_issues(obj, "R5" if family == "R5" else "R4")
            if not issues:
                _check_datatypes(obj, family, body)
                return ValidResource(resource_type, explicit or family)
            codes.append((family, issues))
            continue
        failures.append((family, errors))
    if codes and not failures:
        family, issues = codes[0]
        where = ", ".join(issue.expression for issue in issues[:MAX_ERRORS_SHOWN])
        more = len(issues) - MAX_ERRORS_SHOWN
        where += f" (+{more} more)" if more > 0 else ""
        raise InvalidFhirError(
            "invalid-code",
            f"{resource_type} as {family}: not a code of the required value set at {where}",
            tuple(issues),
        )
    if not failures:
        names = " or ".join(families)
        raise InvalidFhirError(
            "unknown-resource-type", f"resourceType is not a resource type of {names}"
        )
    parts = [f"as {family}: {_join(errors)}" for family, errors in failures]
    raise InvalidFhirError(
        "validation-failed",
        f"{resource_type} is not valid " + "; ".join(parts),
        _issues(resource_type, failures[-1][1]),
    )


def _check_datatypes(obj: dict[str, Any], family: Family, body: bytes | None) -> None:
    """Raise InvalidFhirError when a resource that passed its models breaks a datatype rule."""
    try:
        issues = datatype_issues(body, obj, family)
    except RecursionError:
        raise InvalidFhirError("too-deep", f"{obj['resourceType']} nests too deeply") from None
    if issues:
        first = issues[0]
        more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        raise InvalidFhirError(
            first.code, f"{first.expression} {first.detail}{more}", tuple(issues)
        )


def _binding_issues(obj: dict[str, Any], family: BindingFamily) -> list[FhirIssue]:
    """Required-binding issues of a resource, or of a Bundle and each of its entry resources."""
    resource_type = str(obj.get("resourceType"))
    issues = binding_issues(obj, family, resource_type)
    entries = obj.get("entry") if resource_type == "Bundle" else None
    if isinstance(entries, list):
        for index, entry in enumerate(entries):
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict):
                issues.extend(binding_issues(resource, family, f"Bundle.entry[{index}].resource"))
    return issues


def _validation_errors(
    obj: dict[str, Any], klass: Any, family: Family, *, stop_early: bool
) -> list[str]:
    """Element-path errors of `obj` against `klass` (a Bundle shell-and-entries when Bundle)."""
    if klass.get_resource_type() != "Bundle" or not isinstance(obj.get("entry"), list):
        return _model_errors(obj, klass, "")
    entries: list[Any] = obj["entry"]
    shell = dict(obj)
    shell["entry"] = [
        {k: v for k, v in entry.items() if k != "resource"} if isinstance(entry, dict) else entry
        for entry in entries
    ]
    errors = _model_errors(shell, klass, "")
    if errors and stop_early:
        return errors
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "resource" not in entry:
            continue
        errors.extend(_entry_errors(entry["resource"], family, f"entry[{index}].resource"))
        if errors and stop_early:
            return errors
    return errors


def _entry_errors(resource: object, family: Family, path: str) -> list[str]:
    """Errors of one Bundle entry resource, validated with the model of its own type."""
    if not isinstance(resource, dict):
        return [f"{path} (not-an-object)"]
    entry_type = resource.get("resourceType")
    if not isinstance(entry_type, str):
        return [f"{path}.resourceType (missing-resource-type)"]
    klass = model_class(entry_type, family)
    if klass is None:
        return [f"{path}.resourceType (unknown-resource-type)"]
    return _model_errors(resource, klass, path)


def _model_errors(obj: dict[str, Any], klass: Any, path: str) -> list[str]:
    """Run one fhir.resources validation; errors as `path (type)` strings without values."""
    resource_type = str(klass.get_resource_type())
    try:
        klass.model_validate(obj)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return [_render(path, err["loc"], err["type"]) for err in errors]
    except RecursionError:
        raise InvalidFhirError(
            "too-deep", f"{resource_type} at {path or '(root)'} nests too deeply to validate"
        ) from None
    except (KeyError, TypeError, AttributeError, IndexError, ValueError) as exc:
        # fhir.resources lets these escape on some bad nested input (an unknown contained type)
        return [f"{path or '(root)'} (validator-{type(exc).__name__})"]
    return []


def _render(path: str, loc: Sequence[int | str], error_type: str) -> str:
    """One error as `element.path[index] (error-type)`, with value-like segments masked.

    The key of an unknown element (`extra_forbidden`) is the sender's text, not an element
    name, so it is shown as `<unknown>`; the path to its parent stays.
    """
    out = path
    last = len(loc) - 1
    for position, part in enumerate(loc):
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if position == last and error_type == "extra_forbidden":
            name = "<unknown>"
        else:
            name = part if _ELEMENT_NAME.fullmatch(part) else "?"
        out = f"{out}.{name}" if out else name
    kind = error_type if _ERROR_TYPE.fullmatch(error_type) else "error"
    return f"{out or '(root)'} ({kind})"


def _issues(resource_type: str, errors: list[str]) -> tuple[FhirIssue, ...]:
    """Rendered errors (`path (type)`) as issues located from the resource type."""
    out = []
    for error in errors[:MAX_ERRORS_SHOWN]:
        path, _, kind = error.rpartition(" (")
        where = resource_type if path in {"", "(root)"} else f"{resource_type}.{path}"
        out.append(FhirIssue("validation-failed", where, f"is not valid ({kind}"))
    return tuple(out)


def _join(errors: list[str]) -> str:
    """At most MAX_ERRORS_SHOWN errors, then a count of the rest."""
    shown = ", ".join(errors[:MAX_ERRORS_SHOWN])
    more = len(errors) - MAX_ERRORS_SHOWN
    return f"{shown} (+{more} more)" if more > 0 else shown


COMMON_TYPES: Final = (
    "Patient",
    "Observation",
    "Encounter",
    "Condition",
    "Bundle",
    "CareTeam",
    "EpisodeOfCare",
    "Consent",
    "Procedure",
    "MedicationRequest",
    "DiagnosticReport",
    "AllergyIntolerance",
    "Immunization",
    "CarePlan",
    "Communication",
    "Organization",
    "Practitioner",
)


def warm_up(resource_types: tuple[str, ...] = COMMON_TYPES) -> None:
    """Import and exercise the models of common resource types in both families.

    fhir.resources imports models lazily; doing it at start-up keeps the first messages of a
    stage (and its latency percentiles) from paying for module imports.
    """
    datatypes_warm_up()
    for family in ("R4B", "R5"):
        for resource_type in resource_types:
            klass = model_class(resource_type, family)
            if klass is not None:
                with contextlib.suppress(Exception):
                    klass.model_validate({"resourceType": resource_type})
                for body in (b"", None):
                    datatype_issues(body, {"resourceType": resource_type}, family)
