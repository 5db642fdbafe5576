"""FHIRPath for SQL on FHIR views: fhirpathpy with the functions the specification needs.

SQL on FHIR v2.0.0 requires `getResourceKey()` and `getReferenceKey([type])`; its tests also use
FHIRPath's `lowBoundary()` / `highBoundary()` (FHIRPath N2), which fhirpathpy 2.2.4 lacks, and
`join()` of an empty collection (the empty string, where fhirpathpy gives nothing). `evaluate`
runs a parsed expression with `$this` bound to the focus, the R4 model (choice types such as
`value.ofType(Quantity)`) and the view's variables.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, Final

from fhirpathpy.engine import do_eval
from fhirpathpy.engine.invocations.constants import constants as fhirpath_constants
from fhirpathpy.engine.nodes import ResourceNode
from fhirpathpy.engine.util import arraify, process_user_invocation_table
from fhirpathpy.models import models

_MODEL: Final[dict[str, Any]] = models["r4"]


def _resource_key(inputs: list[Any]) -> list[Any]:
    return [i["id"] for i in inputs if isinstance(i, Mapping) and isinstance(i.get("id"), str)]


def _reference_key(inputs: list[Any], kind: Any = None) -> list[Any]:
    wanted = getattr(kind, "name", None)
    out = []
    for item in inputs:
        ref = item.get("reference") if isinstance(item, Mapping) else None
        if not isinstance(ref, str):
            continue
        parts = ref.split("/_history/")[0].split("/")
        if len(parts) < 2:
            continue
        if wanted is None or parts[-2] == wanted:
            out.append(parts[-1])
    return out


def _join(inputs: list[Any], separator: str = "") -> list[Any]:
    # FHIRPath's join() of an empty collection is the empty string (fhirpathpy gives nothing).
    return [separator.join(i for i in inputs if isinstance(i, str))]


_FUNCTIONS: Final = process_user_invocation_table(  # type: ignore[no-untyped-call]
    {
        "getResourceKey": {"fn": _resource_key, "arity": {0: []}},
        "getReferenceKey": {"fn": _reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
        "join": {"fn": _join, "arity": {0: [], 1: ["String"]}},
    }
)


_DATE: Final = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME: Final = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?(?:T(\d{2})(?::(\d{2})(?::(\d{2})(\.\d+)?)?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
_TIME: Final = re.compile(r"^(\d{2})(?::(\d{2})(?::(\d{2})(\.\d+)?)?)?$")


def _date_bound(year: str, month: str | None, day: str | None, high: bool) -> str:
    m = int(month) if month else (12 if high else 1)
    last = calendar.monthrange(int(year), m)[1]
    d = int(day) if day else (last if high else 1)
    return f"{year}-{m:02d}-{d:02d}"


def _clock_bound(
    hh: str | None, mm: str | None, ss: str | None, frac: str | None, high: bool
) -> str:
    top = "59" if high else "00"
    milli = (frac or ".")[1:4].ljust(3, "9" if high else "0")
    return f"{hh or ('23' if high else '00')}:{mm or top}:{ss or top}.{milli}"


def _bound(value: Any, kind: str, high: bool) -> Any:
    """FHIRPath lowBoundary() / highBoundary() (N2) of one decimal, date, dateTime or time."""
    text = str(value)
    if kind == "decimal" or (isinstance(value, float | Decimal) and kind != "integer"):
        number = Decimal(text)
        step = Decimal(1).scaleb(number.as_tuple().exponent - 1) * 5  # type: ignore[operator]
        return number + step if high else number - step
    if kind == "date" and (found := _DATE.match(text)):
        year, month, day = found.groups()
        return _date_bound(year, month, day, high)
    if kind == "time" and (found := _TIME.match(text)):
        hh, mm, ss, frac = found.groups()
        return _clock_bound(hh, mm, ss, frac, high)
    if kind in {"dateTime", "instant"} and (found := _DATETIME.match(text)):
        year, month, day, hh, mm, ss, frac, zone = found.groups()
        date = _date_bound(year, month, day, high)
        zone = zone or ("-12:00" if high else "+14:00")
        return f"{date}T{_clock_bound(hh, mm, ss, frac, high)}{zone}"
    return None


def _boundary(high: bool) -> Callable[..., list[Any]]:
    def run(_ctx: Any, inputs: list[Any], _precision: Any = None) -> list[Any]:
        out = []
        for item in inputs:
            node = isinstance(item, ResourceNode)
            data = item.data if node else item
            kind = item.get_type_info().name if node else ""
            found = _bound(data, str(kind), high)
            if found is not None:
                out.append(found)
        return out

    return run


# Given the nodes (with their FHIR types) rather than their data, unlike the table above.
_FUNCTIONS["lowBoundary"] = {"fn": _boundary(high=False), "arity": {0: [], 1: ["Integer"]}}
_FUNCTIONS["highBoundary"] = {"fn": _boundary(high=True), "arity": {0: [], 1: ["Integer"]}}


def evaluate(focus: Any, parsed: Any, variables: Mapping[str, Any]) -> list[Any]:
    """fhirpathpy's evaluation with `$this` bound to the focus (its own API leaves it unset)."""
    fhirpath_constants.reset()  # type: ignore[no-untyped-call]
    data = arraify(focus)  # type: ignore[no-untyped-call]
    ctx = {
        "dataRoot": data,
        "$this": data,
        "vars": {"ucum": "http://unitsofmeasure.org", **variables},
        "model": _MODEL,
        "userInvocationTable": _FUNCTIONS,
    }
    return list(do_eval(ctx, data, parsed["children"][0]))  # type: ignore[no-untyped-call]
