"""The one parameter-record mechanism: frozen, validated records with strict TOML/JSON I/O.

A record (:class:`Record`, a pydantic v2 model) declares each field with its type, range or
choices and a description. The same declaration validates a value, words the error, writes
the JSON snapshot that accompanies every artifact, loads a strict TOML/JSON file, generates
the command-line options (:func:`cli_fields`) and the JSON schema editors check config files
against (:func:`file_schema`). Every invalid value raises ONE :class:`ParamError`: a single
line naming the field, what is allowed and what was given.

How to declare a record::

    class Recipe(Record):
        _record_name: ClassVar[str] = "training option"
        _error: ClassVar[type[ParamError]] = TrainSettingsError

        epochs: int = Field(20, description="Training epochs.", ge=0, le=10000)
        init: SupportInit = Field(SupportInit.sign, description="...", strict=False)

Integers, floats and booleans are strict (no ``True`` for an int, no ``"4"`` for a number;
an int is accepted for a float, and stored as a float); a tuple field accepts a list
(JSON and TOML have no tuples); a choice is a ``str`` Enum declared ``strict=False``, so
its value string is accepted. Rules between fields go in a
``model_validator(mode="after")`` that raises the record's error class; it runs only once
every field is valid on its own.

This module imports neither torch nor amaranth (the simulation path installs without them).
"""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import Self

__all__ = ["ParamError", "Record", "CliField", "cli_fields", "file_schema",
           "parse_record_text", "read_record_file", "SCHEMA_DIALECT", "SCHEMA_KEY"]

#: The JSON-schema dialect pydantic generates.
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: A top-level key a JSON file may carry to name its schema for editors (not a field).
SCHEMA_KEY = "$schema"


class ParamError(ValueError):
    """An invalid parameter value: ``str()`` is one line, ``<record> field '<name>': ...``.

    ``record`` overrides the class's record name ("config" gives ``config field 'x'``);
    subclasses (``ConfigError``, ``VariationError``, ``TrainSettingsError``) set
    :attr:`prefix` instead.
    """

    #: What the message starts with, before the quoted field name.
    prefix: ClassVar[str] = "config field"

    def __init__(self, field_name: str, message: str, record: str | None = None):
        self.field_name = field_name
        prefix = f"{record} field" if record is not None else self.prefix
        super().__init__(f"{prefix} '{field_name}': {message}")


#: Each record class's JSON schema, the source of the words of its errors.
_SCHEMAS: dict[type, dict[str, Any]] = {}
#: Each record class's tuple fields, which also accept a list (JSON/TOML have no tuples).
_TUPLE_FIELDS: dict[type, tuple[str, ...]] = {}


class Record(BaseModel):
    """A frozen parameter record: validated at construction, compared and hashed by value.

    Subclasses set ``_record_name`` (the message prefix, e.g. "config field"), ``_error``
    (the :class:`ParamError` subclass raised) and optionally ``_sibling_tables`` (tables a
    record file may hold beside the record's own, e.g. ``("train",)``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    #: How errors name a field of this record ("config field", "training option").
    _record_name: ClassVar[str] = "config field"
    #: The error type raised for an invalid value of this record.
    _error: ClassVar[type[ParamError]] = ParamError
    #: Tables a record file may hold beside the record's own table.
    _sibling_tables: ClassVar[tuple[str, ...]] = ()
    #: When several fields are wrong, the first of them in this order is named (fields not
    #: listed follow, in declaration order); an unknown field always comes first.
    _check_order: ClassVar[tuple[str, ...]] = ()
    #: Fields left out of the snapshot while None (their absence reads as None): a field
    #: added later keeps every earlier snapshot's text, and the records equal to it.
    _omit_none: ClassVar[tuple[str, ...]] = ()
    #: Fields left out of the snapshot while equal to their default (their absence reads as
    #: the default), for the same reason.
    _omit_default: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **data: Any) -> None:
        for name in _TUPLE_FIELDS[type(self)]:
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        try:
            self.__pydantic_validator__.validate_python(data, self_instance=self)
        except ValidationError as exc:
            raise self._to_param_error(exc, data) from None

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _TUPLE_FIELDS[cls] = tuple(
            name for name, info in cls.model_fields.items()
            if typing.get_origin(_unwrap_optional(info.annotation)[0]) is tuple)
        for name, info in cls.model_fields.items():
            if _enum_of(info.annotation) is not None and \
                    not any(getattr(m, "strict", None) is False for m in info.metadata):
                # strict mode would accept only Enum members, never the value string a
                # TOML/JSON file or the command line gives
                raise TypeError(f"{cls.__name__}.{name}: declare a choice field with "
                                f"Field(..., strict=False)")

    # ------------------------------------------------------------------ errors

    @classmethod
    def _to_param_error(cls, exc: ValidationError, data: dict[str, Any]) -> ParamError:
        """The first failing field of ``exc`` (validating ``data``) as one field-named
        error of this record."""
        rank = {name: i for i, name in enumerate(cls._check_order)}

        def order(error: Any) -> int:
            if error["type"] == "extra_forbidden":
                return -1
            return rank.get(str(error["loc"][0]) if error["loc"] else "", len(rank))

        first = min(exc.errors(include_url=False), key=order)  # stable: ties keep pydantic's
        raised = (first.get("ctx") or {}).get("error")
        if isinstance(raised, ParamError):  # a model validator's own error: keep it
            return raised
        loc = first["loc"]
        name = str(loc[0]) if loc else "?"
        if first["type"] == "extra_forbidden":
            noun = cls._record_name.split()[-1]
            allowed = ", ".join(sorted(cls.model_fields))
            return cls._error(name, f"unknown {noun}; allowed {noun}s are {allowed}")
        if first["type"] == "missing":
            return cls._error(name, "is required")
        schema = cls._schema()
        node = schema["properties"].get(name, {})
        entry = next((part for part in loc[1:] if isinstance(part, int)), None)
        if entry is not None:
            node = _resolve(node, schema)
            lists = [p for p in node.get("anyOf", [node]) if "items" in p]
            items = lists[0]["items"] if lists else {}
            return cls._error(name, f"entry {entry} must be {describe(items, schema)}, "
                                    f"got {first['input']!r}")
        return cls._error(name, f"must be {describe(node, schema)}, got {first['input']!r}")

    @classmethod
    def _schema(cls) -> dict[str, Any]:
        cached = _SCHEMAS.get(cls)
        if cached is None:  # only errors and the CLI read it: built on first use
            cached = _SCHEMAS[cls] = cls.model_json_schema()
        return cached

    # ------------------------------------------------------------------ I/O

    def to_dict(self) -> dict[str, Any]:
        """Field values as JSON types: tuples as lists, enums as their values (a field of
        ``_omit_none`` only when it is not None)."""
        return {name: _plain(getattr(self, name)) for name in type(self).model_fields
                if not (name in self._omit_none and getattr(self, name) is None)
                and not (name in self._omit_default and
                         getattr(self, name) == type(self).model_fields[name].default)}

    def to_json(self) -> str:
        """The snapshot text: sorted keys, indent 2, a trailing newline."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write_snapshot(self, path: str | Path) -> Path:
        """Write the JSON snapshot that accompanies a generated artifact (atomically)."""
        from sbnn.fileio import atomic_write_text

        return atomic_write_text(path, self.to_json())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """A record from field values; an unknown key is an error naming it."""
        return cls(**data)

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated again (derived fields keep their values
        unless changed, as ``dataclasses.replace`` did)."""
        return type(self)(**({name: getattr(self, name) for name in type(self).model_fields}
                             | changes))

    @classmethod
    def load_file(cls, path: str | Path, option: str, table: str) -> Self:
        """From a TOML or JSON file, fields at top level or under ``[table]``; every problem
        is one error naming ``option`` (the command-line option that gave the file) or the
        field. See :func:`read_record_file` for what makes a file strict."""
        fields, _ = read_record_file(path, option, table, cls._sibling_tables, cls._error)
        return cls.from_dict(fields)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The record's JSON schema (types, ranges, choices, descriptions), for editors."""
        return cls.model_json_schema()


def _plain(value: Any) -> Any:
    if isinstance(value, Record):  # a record inside a record (a recipe in its settings)
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    return value


# ---------------------------------------------------------------------- descriptions

def _resolve(node: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """``node`` with a ``$ref`` into the schema's ``$defs`` followed."""
    ref = node.get("$ref")
    if ref is None:
        return node
    return schema.get("$defs", {})[ref.rsplit("/", 1)[-1]]


def _number(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _range(node: dict[str, Any], integer: bool) -> str:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    if low is None and high is None:
        return ""
    if integer and "exclusiveMinimum" not in node and "exclusiveMaximum" not in node:
        if high is None:
            return f" >= {low}"
        return f" <= {high}" if low is None else f" in {low}..{high}"
    if high is None:
        return f" {'>' if 'exclusiveMinimum' in node else '>='} {_number(low)}"
    if low is None:
        return f" {'<' if 'exclusiveMaximum' in node else '<='} {_number(high)}"
    left = "(" if "exclusiveMinimum" in node else "["
    right = ")" if "exclusiveMaximum" in node else "]"
    return f" in {left}{_number(low)}, {_number(high)}{right}"


def describe(node: dict[str, Any], schema: dict[str, Any]) -> str:
    """What a value of the schema ``node`` must be, in words: "an integer in 2..16",
    "a number in (0, 5000]", "'sign' or 'latent'", "a list of at least 2 integers"."""
    node = _resolve(node, schema)
    if "anyOf" in node:
        parts = [p for p in node["anyOf"] if p.get("type") != "null"]
        words = " or ".join(describe(p, schema) for p in parts)
        return words + (" or left out" if len(parts) < len(node["anyOf"]) else "")
    if "enum" in node:
        names = [repr(v) for v in node["enum"]]
        return " or ".join(names) if len(names) <= 2 else "one of " + ", ".join(names)
    kind = node.get("type")
    if kind == "integer":
        return "an integer" + _range(node, True)
    if kind == "number":
        return "a number" + _range(node, False)
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return "a string"
    if kind == "array":
        low, high = node.get("minItems"), node.get("maxItems")
        count = (f"{low} " if low == high else f"at least {low} ") if low else ""
        if high is not None and low != high:
            count += f"at most {high} "
        item = describe(node.get("items", {}), schema).removeprefix("an ").removeprefix("a ")
        head, _, rest = item.partition(" ")
        return f"a list of {count}{head}s{(' ' + rest) if rest else ''}"
    return "a valid value"


# ---------------------------------------------------------------------- command line

@dataclass(frozen=True)
class CliField:
    """One record field as a command-line option (the CLI builds argparse options from it)."""

    #: The field's name (the argparse ``dest``).
    name: str
    #: The option, ``--`` and the name with dashes: ``--base-epochs``.
    option: str
    #: The value type argparse converts to: int, float, str or bool.
    type: type
    #: The field's default (a choice's value string).
    default: Any
    #: The field's description and what it allows.
    help: str
    #: The allowed values of a choice field, else None.
    choices: tuple[str, ...] | None
    #: Whether the field may be left out (None).
    nullable: bool
    #: Whether the field holds a tuple of ``type`` values.
    multiple: bool = False


def _enum_of(annotation: Any) -> type[enum.Enum] | None:
    base, _ = _unwrap_optional(annotation)
    return base if isinstance(base, type) and issubclass(base, enum.Enum) else None


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``| None``, whether None was allowed)."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap_optional(args[0])[0], True
    return annotation, False


def cli_fields(record_cls: type[Record]) -> list[CliField]:
    """Each field of ``record_cls`` as a :class:`CliField`, in declaration order."""
    schema = record_cls._schema()
    out = []
    for name, info in record_cls.model_fields.items():
        base, nullable = _unwrap_optional(info.annotation)
        multiple = typing.get_origin(base) is tuple
        if multiple:
            base = _unwrap_optional(typing.get_args(base)[0])[0]
        choice = _enum_of(base)
        choices = tuple(str(m.value) for m in choice) if choice is not None else None
        value_type = str if choice is not None else base
        rule = describe(schema["properties"][name], schema)
        help_text = f"{info.description or name} ({rule})" if rule else info.description
        out.append(CliField(name=name, option="--" + name.replace("_", "-"),
                            type=value_type, help=help_text,
                            default=info.default.value if choice else info.default,
                            choices=choices, nullable=nullable, multiple=multiple))
    return out


# ---------------------------------------------------------------------- files

def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is an error, not "the last one wins"."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r} (give each field once)")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a config may hold")


def parse_record_text(text: str, toml: bool) -> Any:
    """Parse TOML (``toml=True``) or strict JSON: no duplicate keys, no NaN/Infinity."""
    if toml:
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        return tomllib.loads(text)  # TOML itself forbids duplicate keys
    return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)


def read_record_file(path: str | Path, option: str, table: str,
                     siblings: tuple[str, ...] = (),
                     error: type[ParamError] = ParamError
                     ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(fields, sibling tables) of a strict TOML/JSON record file.

    The fields sit either at top level or under ``[table]``, not both: a top-level field
    beside a ``[table]`` would be silently hidden by it, so it is an error. Besides, only
    the tables named in ``siblings`` may appear (each must be a table), and a top-level
    ``"$schema"`` string (an editor's pointer to the file's JSON schema) is ignored. A file
    with no fields at all (an empty TOML file, ``{}``) gives the record's defaults.
    """
    path = Path(path)
    if not path.is_file():
        raise error(option, f"file {str(path)!r} does not exist")
    try:
        data = parse_record_text(path.read_text(), path.suffix.lower() == ".toml")
    except Exception as exc:  # noqa: BLE001 - any parse error becomes one clear line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(option, f"cannot parse {str(path)!r}: {msg}") from None
    if not isinstance(data, dict):
        raise error(option, f"{str(path)!r} must hold a table/object of fields")
    if isinstance(data.get(SCHEMA_KEY), str):
        data = {k: v for k, v in data.items() if k != SCHEMA_KEY}
    allowed = ", ".join(f"[{t}]" for t in (table, *siblings))
    others: dict[str, dict[str, Any]] = {}
    for key, value in data.items():
        if key in (table, *siblings):
            if not isinstance(value, dict):
                raise error(key, f"in {str(path)!r} must be a table of fields, "
                                 f"got {value!r}")
            if key != table:
                others[key] = value
        elif isinstance(value, dict):
            raise error(key, f"unknown table [{key}] in {str(path)!r}; allowed tables are "
                             f"{allowed}")
        elif table in data:
            raise error(key, f"given at top level of {str(path)!r} beside a [{table}] "
                             f"table, which would hide it; move it into [{table}]")
    fields = data[table] if table in data else \
        {k: v for k, v in data.items() if k not in siblings}
    return fields, others


def file_schema(record_cls: type[Record], table: str, title: str, description: str,
                siblings: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The JSON schema of a record file as :func:`read_record_file` reads it: the record's
    fields at top level or under ``[table]``, the ``siblings`` tables (name -> schema),
    and an optional ``$schema`` key; nothing else."""
    record = record_cls.json_schema()
    defs = dict(record.pop("$defs", {}))
    name = record_cls.__name__
    defs[name] = record
    properties: dict[str, Any] = {SCHEMA_KEY: {"type": "string",
                                               "description": "This file's JSON schema."}}
    properties.update(record["properties"])
    properties[table] = {"$ref": f"#/$defs/{name}",
                         "description": f"The fields, as a [{table}] table instead of at "
                                        f"top level (not both)."}
    for sibling, sibling_schema in (siblings or {}).items():
        sibling_schema = dict(sibling_schema)
        defs.update(sibling_schema.pop("$defs", {}))
        properties[sibling] = sibling_schema
    return {"$schema": SCHEMA_DIALECT, "title": title, "description": description,
            "type": "object",
            "properties": properties, "additionalProperties": False, "$defs": defs}
