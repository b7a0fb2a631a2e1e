"""Typed `-o KEY=VALUE` options. Each verb and each task declares its options as a pydantic model;
a verb validates what the user gave against the union of its own and its task's, so a typo or a
wrong type is one line naming the key and the closest valid names, never a silently ignored key."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from zoo.errors import ConfigError, _closest


class Options(BaseModel):
    """Base of every options model: unknown keys are errors."""

    # NaN/inf is no sensible value of any option (a temperature, a tolerance, a threshold)
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, allow_inf_nan=False)


def combine(*schemas: type[BaseModel] | None, name: str = "Options") -> type[Options]:
    """One model with the fields of all `schemas` (later ones win on a shared name)."""
    fields: dict[str, Any] = {}
    for schema in schemas:
        if schema is None:
            continue
        for key, info in schema.model_fields.items():
            fields[key] = (info.annotation, info)
    return create_model(name, __base__=Options, **fields)


def validate(raw: dict | None, schema: type[BaseModel], what: str) -> dict:
    """Check `raw` against `schema`; return the typed values of the keys that were given.

    `what` names the context in the error ("eval of operator models")."""
    raw = {k.replace("-", "_"): v for k, v in (raw or {}).items()}
    valid = list(schema.model_fields)
    for key in raw:
        if key not in schema.model_fields:
            close = _closest(key, valid)
            hint = ("did you mean " + " or ".join(f"'{c}'" for c in close) + "?") if close else (
                "valid options: " + ", ".join(sorted(valid)) if valid else "it takes no options")
            raise ConfigError(f"unknown option '{key}' for {what}; {hint}")
    try:
        parsed = schema.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "?"
        raise ConfigError(f"option '{key}' for {what}: {first['msg']} (got {first.get('input')!r})") from None
    return {k: getattr(parsed, k) for k in parsed.model_fields_set}


def describe(schema: type[BaseModel]) -> list[dict]:
    """Name, type, default and help of every option (for `zoo info` and the docs)."""
    rows = []
    for key, info in schema.model_fields.items():
        ann = getattr(info.annotation, "__name__", None) or str(info.annotation).replace("typing.", "")
        rows.append({"name": key, "type": ann, "default": info.default, "help": info.description or ""})
    return rows
