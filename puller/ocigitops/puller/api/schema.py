"""One definition, three uses: dataclasses that generate OpenAPI schemas and parse objects.

API types are frozen, keyword-only dataclasses whose fields are declared with :func:`prop`
(a description plus OpenAPI value validations). From them:

- :func:`schema_for` builds the OpenAPI v3 schema that goes into the CRD (structural, as
  the API server requires);
- :func:`from_dict` parses a JSON object into the dataclass, applying the same validations,
  the same defaults, and the cross-field :class:`Constraint` rules, and reports every
  problem with its path (``spec.ref.digest: ...``) in one :class:`ValidationError`;
- :func:`to_dict` turns a dataclass back into its JSON form (camelCase, ``None`` omitted),
  for status writes.

Field names are the snake_case of the JSON name unless ``json=`` says otherwise. A field
without a default is required. Supported field types: ``str``, ``bool``, ``int``,
``Literal[...]`` of strings (an enum), ``int | str`` (int-or-string), ``tuple[X, ...]``,
``Mapping[str, str]``, another API dataclass, and any of those ``| None``.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

Schema = dict[str, Any]
T = TypeVar("T")

_META_KEY = "ocigitops.api"
_MISSING: Any = dataclasses.MISSING


class ValidationError(ValueError):
    """An object does not match its API type; ``errors`` lists every problem with its path."""

    def __init__(self, errors: Sequence[str], what: str = "object") -> None:
        self.errors = list(errors)
        self.what = what
        super().__init__(f"{what} is invalid: " + "; ".join(self.errors))


class FieldError(ValueError):
    """Raised by an API dataclass's ``__post_init__`` for a value of one of its fields."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """Schema facts of one field, kept in the dataclass field's metadata."""

    description: str
    json: str | None = None
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    minimum: int | None = None
    min_items: int | None = None
    max_items: int | None = None
    fmt: str | None = None
    list_map_keys: tuple[str, ...] = ()
    schema_default: Any = None
    extra: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Constraint:
    """A cross-field rule of an object: a schema fragment (``required``, ``not``, ``oneOf``
    and friends, which the API server enforces) and the message our parser reports."""

    schema: Mapping[str, Any]
    message: str


def prop(description: str, *, default: Any = _MISSING, default_factory: Any = _MISSING,
         json: str | None = None, pattern: str | None = None, min_length: int | None = None,
         max_length: int | None = None, minimum: int | None = None,
         min_items: int | None = None, max_items: int | None = None, fmt: str | None = None,
         list_map_keys: tuple[str, ...] = (), schema_default: Any = None,
         extra: Mapping[str, Any] | None = None) -> Any:
    """Declare an API field. ``schema_default`` puts a ``default`` into the CRD schema (the
    API server then stores it); the dataclass ``default`` is what the parser uses."""
    info = FieldInfo(description, json, pattern, min_length, max_length, minimum, min_items,
                     max_items, fmt, list_map_keys, schema_default, extra)
    meta = {_META_KEY: info}
    if default is not _MISSING:
        return dataclasses.field(default=default, metadata=meta)
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(metadata=meta)


def camel(name: str) -> str:
    """``trusted_root_secret_ref`` -> ``trustedRootSecretRef``."""
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def _info(f: dataclasses.Field[Any]) -> FieldInfo:
    info = f.metadata.get(_META_KEY)
    if not isinstance(info, FieldInfo):
        raise TypeError(f"field {f.name} is not declared with prop()")
    return info


def json_name(f: dataclasses.Field[Any]) -> str:
    """The JSON name of a dataclass field."""
    return _info(f).json or camel(f.name)


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is _MISSING and f.default_factory is _MISSING


_HINTS: dict[type, dict[str, Any]] = {}
_FIELDS: dict[type, dict[str, dataclasses.Field[Any]]] = {}


def _hints(cls: type) -> dict[str, Any]:
    # Once per class: get_type_hints evaluates every string annotation again on each call,
    # which was about 5% of the controller's CPU (every reconcile parses its object).
    hints = _HINTS.get(cls)
    if hints is None:
        hints = _HINTS[cls] = typing.get_type_hints(cls)
    return hints


def _json_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = {json_name(f): f for f in dataclasses.fields(cls)}
    return fields


def _strip_optional(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return Union[tuple(args)]  # noqa: UP007 (a runtime-built union)
    return tp


def _is_int_or_str(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType) and set(get_args(tp)) == {int, str}


def _description(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n", 1)[0].split())


def _constraints(cls: type) -> tuple[Constraint, ...]:
    return tuple(getattr(cls, "__api_constraints__", ()))


# -- schema generation ---------------------------------------------------------------------

def _type_schema(tp: Any) -> Schema:
    tp = _strip_optional(tp)
    if _is_int_or_str(tp):
        return {"x-kubernetes-int-or-string": True,
                "anyOf": [{"type": "integer"}, {"type": "string"}]}
    if tp is str:
        return {"type": "string"}
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer", "format": "int64"}
    origin = get_origin(tp)
    if origin is Literal:
        return {"type": "string", "enum": list(get_args(tp))}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(get_args(tp)[0])}
    if origin is Mapping or origin is dict:
        return {"type": "object", "additionalProperties": _type_schema(get_args(tp)[1])}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return schema_for(tp)
    raise TypeError(f"unsupported API field type {tp!r}")


def field_schema(f: dataclasses.Field[Any], tp: Any) -> Schema:
    """The OpenAPI schema of one field (type plus validations plus description)."""
    info = _info(f)
    out = _type_schema(tp)
    out = {"description": info.description, **{k: v for k, v in out.items()
                                               if k != "description"}}
    for key, val in (("pattern", info.pattern), ("minLength", info.min_length),
                     ("maxLength", info.max_length), ("minimum", info.minimum),
                     ("minItems", info.min_items), ("maxItems", info.max_items),
                     ("format", info.fmt), ("default", info.schema_default)):
        if val is not None:
            out[key] = val
    if info.list_map_keys:
        out["x-kubernetes-list-type"] = "map"
        out["x-kubernetes-list-map-keys"] = list(info.list_map_keys)
    if info.extra:
        out.update(info.extra)
    return out


def schema_for(cls: type) -> Schema:
    """The OpenAPI v3 object schema of an API dataclass."""
    hints = _hints(cls)
    props: Schema = {}
    required: list[str] = []
    for f in dataclasses.fields(cls):
        name = json_name(f)
        props[name] = field_schema(f, hints[f.name])
        if _is_required(f):
            required.append(name)
    out: Schema = {"type": "object", "properties": props}
    desc = _description(cls)
    if desc:
        out["description"] = desc
    if required:
        out["required"] = sorted(required)
    cons = _constraints(cls)
    if len(cons) == 1:
        out.update(dict(cons[0].schema))
    elif cons:
        out["allOf"] = [dict(c.schema) for c in cons]
    return out


# -- parsing -------------------------------------------------------------------------------

_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def matches(schema: Mapping[str, Any], value: Any) -> bool:
    """Whether ``value`` satisfies a constraint fragment (the subset constraints use:
    ``required``, ``properties`` with ``enum``, ``not``, ``allOf``, ``anyOf``, ``oneOf``)."""
    if "required" in schema and (not isinstance(value, Mapping)
                                 or any(k not in value for k in schema["required"])):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if "properties" in schema and isinstance(value, Mapping):
        for k, sub in schema["properties"].items():
            if k in value and not matches(sub, value[k]):
                return False
    if "not" in schema and matches(schema["not"], value):
        return False
    if "allOf" in schema and not all(matches(s, value) for s in schema["allOf"]):
        return False
    if "anyOf" in schema and not any(matches(s, value) for s in schema["anyOf"]):
        return False
    return not ("oneOf" in schema
                and sum(1 for s in schema["oneOf"] if matches(s, value)) != 1)


def _check_scalar(info: FieldInfo, value: Any, path: str, errors: list[str]) -> None:
    if isinstance(value, str):
        if info.min_length is not None and len(value) < info.min_length:
            errors.append(f"{path}: must be at least {info.min_length} characters long")
        if info.max_length is not None and len(value) > info.max_length:
            errors.append(f"{path}: must be at most {info.max_length} characters long")
        if info.pattern is not None and not re.search(info.pattern, value):
            errors.append(f"{path}: {value!r} does not match {info.pattern}")
        if info.fmt == "date-time" and not _DATE_TIME.match(value):
            errors.append(f"{path}: {value!r} is not an RFC 3339 date-time")
    elif isinstance(value, int) and not isinstance(value, bool) \
            and info.minimum is not None and value < info.minimum:
        errors.append(f"{path}: must be at least {info.minimum}")


def _convert(tp: Any, info: FieldInfo, value: Any, path: str, errors: list[str]) -> Any:
    optional = tp is not _strip_optional(tp)
    tp = _strip_optional(tp)
    if value is None:
        if not optional:
            errors.append(f"{path}: must not be null")
        return None
    if _is_int_or_str(tp):
        if isinstance(value, bool) or not isinstance(value, int | str):
            errors.append(f"{path}: must be an integer or a string")
            return None
        _check_scalar(info, value, path, errors)
        return value
    if tp is str:
        if not isinstance(value, str):
            errors.append(f"{path}: must be a string, not {type(value).__name__}")
            return None
        _check_scalar(info, value, path, errors)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            errors.append(f"{path}: must be true or false")
            return None
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{path}: must be an integer")
            return None
        _check_scalar(info, value, path, errors)
        return value
    origin = get_origin(tp)
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            errors.append(f"{path}: {value!r} is not one of {', '.join(allowed)}")
            return None
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            errors.append(f"{path}: must be a list")
            return ()
        if info.min_items is not None and len(value) < info.min_items:
            errors.append(f"{path}: must have at least {info.min_items} item(s)")
        if info.max_items is not None and len(value) > info.max_items:
            errors.append(f"{path}: must have at most {info.max_items} item(s)")
        item_tp = get_args(tp)[0]
        item_info = dataclasses.replace(info, min_items=None, max_items=None)
        items = tuple(_convert(item_tp, item_info, v, f"{path}[{i}]", errors)
                      for i, v in enumerate(value))
        for key in info.list_map_keys:
            seen: set[Any] = set()
            for i, v in enumerate(value):
                k = v.get(key) if isinstance(v, Mapping) else None
                if k in seen:
                    errors.append(f"{path}[{i}]: duplicate {key} {k!r}")
                seen.add(k)
        return items
    if origin is Mapping or origin is dict:
        if not isinstance(value, Mapping):
            errors.append(f"{path}: must be an object")
            return {}
        val_tp = get_args(tp)[1]
        return {str(k): _convert(val_tp, info, v, f"{path}.{k}", errors)
                for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return _from_dict(tp, value, path, errors)
    raise TypeError(f"unsupported API field type {tp!r}")


def _from_dict(cls: type[T], data: Any, path: str, errors: list[str]) -> T | None:
    if not isinstance(data, Mapping):
        errors.append(f"{path}: must be an object")
        return None
    hints = _hints(cls)
    fields = _json_fields(cls)
    unknown = sorted(set(data) - set(fields))
    for k in unknown:
        errors.append(f"{path}.{k}: unknown field")
    before = len(errors)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        sub = f"{path}.{name}" if path else name
        if name not in data:
            if _is_required(f):
                errors.append(f"{sub}: is required")
            continue
        kwargs[f.name] = _convert(hints[f.name], _info(f), data[name], sub, errors)
    for c in _constraints(cls):
        if not matches(c.schema, data):
            errors.append(f"{path}: {c.message}" if path else c.message)
    if len(errors) != before:
        return None
    try:
        return cls(**kwargs)
    except FieldError as exc:
        errors.append(f"{path}.{exc.field}: {exc}" if path else f"{exc.field}: {exc}")
        return None
    except (ValueError, TypeError) as exc:
        errors.append(f"{path}: {exc}" if path else str(exc))
        return None


def from_dict(cls: type[T], data: Any, *, path: str = "", what: str | None = None) -> T:
    """Parse ``data`` into ``cls``, or raise :class:`ValidationError` listing every problem."""
    errors: list[str] = []
    out = _from_dict(cls, data, path, errors)
    if errors or out is None:
        raise ValidationError(errors or [f"{path or 'object'}: invalid"],
                              what or cls.__name__)
    return out


def to_dict(obj: Any, *, omit_empty: bool = False) -> Any:
    """The JSON form of an API dataclass (camelCase keys, ``None`` fields omitted; empty
    lists and maps omitted too with ``omit_empty``)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if v is None or (omit_empty and isinstance(v, tuple | Mapping) and not v):
                continue
            out[json_name(f)] = to_dict(v, omit_empty=omit_empty)
        return out
    if isinstance(obj, tuple | list):
        return [to_dict(v, omit_empty=omit_empty) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v, omit_empty=omit_empty) for k, v in obj.items()}
    if isinstance(obj, datetime):
        return obj.isoformat().replace("+00:00", "Z")
    return obj
