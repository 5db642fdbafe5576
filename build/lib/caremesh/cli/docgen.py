"""Generate the configuration reference (docs/operators/configuration.md) from `Settings`."""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from caremesh.settings import Settings

HEADER = """# Configuration reference

Generated from `src/caremesh/settings.py` by `python -m caremesh.cli.docgen`; do not edit by hand.

Every setting is an environment variable `CAREMESH_...`; nested sections use `__`
(`CAREMESH_KAFKA__BOOTSTRAP_SERVERS`). Lists and maps are JSON. Secrets (type `SecretStr`)
never appear in logs or `repr`; give them through the environment or through files in the folder
named by `CAREMESH_SECRETS_DIR` (one file per variable name, e.g. `caremesh_pseudonym__master_key`).
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "None")


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
    elif info.default is PydanticUndefined:
        return "(required)"
    else:
        value = info.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        package = Path(__file__).resolve().parents[1]
        for base, shown in ((package, "<package>"), (Path.cwd(), "."), (Path.home(), "~")):
            if value.is_relative_to(base):
                return f"{shown}/{value.relative_to(base)}"
        return str(value)
    try:
        return json.dumps(value)
    except TypeError:
        return str(value)


def _section_type(annotation: Any) -> type[BaseModel] | None:
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, info in model.model_fields.items():
        section = _section_type(info.annotation)
        variable = f"{prefix}{name.upper()}"
        if section is not None:
            nested.append((variable + "__", section))
            continue
        description = " ".join((info.description or "").split())
        description = (
            description.split(": ", 1)[1] if description.startswith("`CAREMESH_") else description
        )
        kind = _type_name(info.annotation)
        rows.append(f"| `{variable}` | `{kind}` | `{_default(info)}` | {description} |")
    out = rows
    for nested_prefix, section in nested:
        doc = " ".join((section.__doc__ or "").split())
        out += [
            "",
            f"## `{nested_prefix}*`",
            "",
            doc,
            "",
            "| variable | type | default | meaning |",
            "|---|---|---|---|",
            *_rows(section, nested_prefix),
        ]
    return out


def render() -> str:
    """The configuration reference as markdown."""
    lines = [
        HEADER,
        "## Top level",
        "",
        "| variable | type | default | meaning |",
        "|---|---|---|---|",
    ]
    lines += _rows(Settings, "CAREMESH_")
    return "\n".join(lines) + "\n"


def main() -> int:
    """Write the reference to the path given (default docs/operators/configuration.md)."""
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/operators/configuration.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render())
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
