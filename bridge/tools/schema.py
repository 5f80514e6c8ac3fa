"""JSON schema for tool parameters, derived from type hints, plus a small validator.

Why derive the schema: a tool author writes one typed function and the model sees a
schema that cannot drift from the code.  Why our own validator instead of a dependency:
the model's arguments are untrusted input, and the schemas we generate use a small,
known subset of JSON schema (``type``, ``enum``, ``items``, ``properties``, ``required``,
``additionalProperties``, ``anyOf``).  We check exactly that subset honestly and ignore
keywords we do not understand rather than pretending to enforce them.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

JsonSchema = dict[str, Any]

_SIMPLE: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class SchemaError(TypeError):
    """A tool's signature cannot be expressed as JSON schema (raised at declaration time)."""


@dataclass(frozen=True)
class DerivedSignature:
    """What :func:`derive_parameters` learned about a function.

    ``hints`` keeps the resolved annotation of every model-facing parameter so that
    validated JSON values can be converted back to Python values (``Enum`` members,
    ints) before the call.  ``context_param`` is the parameter that receives the
    per-call context and is hidden from the model.
    """

    parameters: JsonSchema
    hints: Mapping[str, Any]
    context_param: str | None


def schema_for_type(hint: Any) -> JsonSchema:
    """The JSON schema for one annotation; raise :class:`SchemaError` if unsupported."""
    origin = get_origin(hint)
    if origin is Annotated:
        base, *meta = get_args(hint)
        inner = schema_for_type(base)
        for item in meta:
            if isinstance(item, str):
                return {**inner, "description": item}
        return inner
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_schema([member.value for member in hint], hint)
    if origin is Literal:
        return _enum_schema(list(get_args(hint)), hint)
    if origin in (Union, types.UnionType):
        args = get_args(hint)
        others = [a for a in args if a is not type(None)]
        if len(others) != 1 or len(others) == len(args):
            raise SchemaError(
                f"unsupported union {hint!r}: only 'X | None' (Optional[X]) is supported"
            )
        return _nullable(schema_for_type(others[0]))
    if hint is list or origin is list:
        schema: JsonSchema = {"type": "array"}
        args = get_args(hint)
        if args:
            schema["items"] = schema_for_type(args[0])
        return schema
    if hint is dict or origin is dict:
        schema = {"type": "object"}
        args = get_args(hint)
        if args:
            if args[0] is not str:
                raise SchemaError(f"unsupported {hint!r}: JSON object keys are always str")
            schema["additionalProperties"] = schema_for_type(args[1])
        return schema
    raise SchemaError(
        f"unsupported annotation {hint!r}: use str, int, float, bool, Literal, Enum, "
        "list[...], dict[str, ...], X | None or Annotated[X, 'description']"
    )


def _enum_schema(values: list[Any], hint: Any) -> JsonSchema:
    kinds = {_json_type(v) for v in values}
    if not values or not kinds <= {"string", "integer", "number", "boolean", "null"}:
        raise SchemaError(f"unsupported {hint!r}: enum values must be JSON scalars")
    schema: JsonSchema = {"enum": values}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), "enum": values}
    return schema


def _nullable(inner: JsonSchema) -> JsonSchema:
    if isinstance(inner.get("type"), str):
        out = {**inner, "type": [inner["type"], "null"]}
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        return out
    out = {"anyOf": [{k: v for k, v in inner.items() if k != "description"}, {"type": "null"}]}
    if "description" in inner:
        out["description"] = inner["description"]
    return out


def description_from_doc(fn: Callable[..., Any]) -> str:
    """The docstring's first paragraph on one line: the part written for a reader."""
    doc = inspect.getdoc(fn) or ""
    first = doc.strip().split("\n\n", 1)[0]
    return " ".join(first.split())


def derive_parameters(
    fn: Callable[..., Any],
    *,
    context_type: type | None = None,
    explicit: JsonSchema | None = None,
) -> DerivedSignature:
    """Derive the ``parameters`` schema of ``fn`` from its signature and type hints.

    A parameter named ``context`` or annotated with ``context_type`` receives the
    per-call context and is left out of the schema.  Parameters with defaults are
    optional.  ``**kwargs`` allows extra properties; ``*args`` and positional-only
    parameters are refused because the model always passes named arguments.  With
    ``explicit`` the given schema is used as is and hints are only resolved
    best-effort, for finding the context parameter.
    """
    signature = inspect.signature(fn)
    localns = {context_type.__name__: context_type} if context_type is not None else None
    try:
        hints = get_type_hints(fn, localns=localns, include_extras=True)
    except Exception as exc:  # an unresolvable forward reference, typically
        if explicit is None:
            raise SchemaError(f"cannot resolve the type hints of {_qualname(fn)}: {exc}") from exc
        hints = {}

    context_param: str | None = None
    properties: dict[str, JsonSchema] = {}
    required: list[str] = []
    param_hints: dict[str, Any] = {}
    extra_allowed = False
    for name, param in signature.parameters.items():
        hint = hints.get(name, param.annotation)
        if name == "context" or (context_type is not None and hint is context_type):
            context_param = name
            continue
        if param.kind is param.VAR_KEYWORD:
            extra_allowed = True
            continue
        if explicit is not None:
            param_hints[name] = hint
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            raise SchemaError(
                f"{_qualname(fn)}: parameter {name!r} must be passable by keyword "
                "(tools receive named arguments)"
            )
        if hint is inspect.Parameter.empty:
            raise SchemaError(f"{_qualname(fn)}: parameter {name!r} needs a type annotation")
        try:
            schema = schema_for_type(hint)
        except SchemaError as exc:
            raise SchemaError(f"{_qualname(fn)}: parameter {name!r}: {exc}") from None
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            default = param.default.value if isinstance(param.default, enum.Enum) else param.default
            if default is not None and _is_json(default):
                schema["default"] = default
        properties[name] = schema
        param_hints[name] = hint

    if explicit is not None:
        if not isinstance(explicit, dict) or explicit.get("type") != "object":
            raise SchemaError(f"{_qualname(fn)}: explicit parameters must be an object schema")
        return DerivedSignature(dict(explicit), {}, context_param)
    parameters: JsonSchema = {"type": "object", "properties": properties, "required": required}
    if not extra_allowed:
        parameters["additionalProperties"] = False
    return DerivedSignature(parameters, param_hints, context_param)


def _qualname(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", repr(fn))


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


# ---------------------------------------------------------------------------- validation


def validate_arguments(schema: JsonSchema, args: Mapping[str, Any]) -> list[str]:
    """Problems with ``args`` against an object ``schema``, one short sentence each.

    The messages go back to the model, so they name the argument and say what was
    expected in plain words.
    """
    return _check_object(schema, args, prefix="")


def _check_object(schema: JsonSchema, value: Mapping[str, Any], prefix: str) -> list[str]:
    problems: list[str] = []
    properties: Mapping[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or ():
        if name not in value:
            problems.append(f"missing required argument '{prefix}{name}'")
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        if name in properties:
            problems.extend(_check(properties[name], item, f"{prefix}{name}"))
        elif extra is False:
            problems.append(f"unexpected argument '{prefix}{name}'")
        elif isinstance(extra, dict):
            problems.extend(_check(extra, item, f"{prefix}{name}"))
    return problems


def _check(schema: Any, value: Any, where: str) -> list[str]:
    if not isinstance(schema, dict):
        return []
    if "anyOf" in schema:
        options = schema["anyOf"]
        if any(not _check(option, value, where) for option in options):
            return []
        first = next((p for o in options if (p := _check(o, value, where))), [])
        return first[:1] or [f"'{where}' does not match any allowed form"]
    kinds = schema.get("type")
    if kinds is not None:
        allowed = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is_type(value, kind) for kind in allowed):
            return [f"'{where}' must be {_describe(allowed)}, got {_json_type(value)}"]
    if "enum" in schema and not any(_same(value, option) for option in schema["enum"]):
        choices = ", ".join(json.dumps(option) for option in schema["enum"])
        return [f"'{where}' must be one of {choices}, got {json.dumps(value)}"]
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        problems: list[str] = []
        for index, item in enumerate(value):
            problems.extend(_check(schema["items"], item, f"{where}[{index}]"))
        return problems
    if isinstance(value, dict) and ("properties" in schema or "additionalProperties" in schema):
        return _check_object(schema, value, prefix=f"{where}.")
    return []


def _is_type(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "integer":
        if isinstance(value, bool):
            return False
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "array":
        return isinstance(value, list)
    if kind == "object":
        return isinstance(value, dict)
    return True  # a type we do not know: do not pretend to check it


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
    "array": "a list",
    "object": "an object",
}


def _describe(kinds: list[str]) -> str:
    return " or ".join(_WORDS.get(kind, kind) for kind in kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ---------------------------------------------------------------------------- conversion


def convert_value(hint: Any, value: Any) -> Any:
    """Turn a validated JSON value into what the annotation promises.

    JSON has no enums and may spell an integer as ``3.0``; the function body should
    not have to care.
    """
    if value is None:
        return None
    origin = get_origin(hint)
    if origin is Annotated:
        return convert_value(get_args(hint)[0], value)
    if origin in (Union, types.UnionType):
        others = [a for a in get_args(hint) if a is not type(None)]
        return convert_value(others[0], value) if len(others) == 1 else value
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    if hint is int and isinstance(value, float):
        return int(value)
    if hint is float and isinstance(value, int):
        return float(value)
    if origin is list and isinstance(value, list):
        (item,) = get_args(hint)
        return [convert_value(item, v) for v in value]
    if origin is dict and isinstance(value, dict):
        _, item = get_args(hint)
        return {k: convert_value(item, v) for k, v in value.items()}
    return value
