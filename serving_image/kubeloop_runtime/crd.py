"""Markers that say, beside a pydantic field, what its CRD schema says that pydantic cannot.

``crds/`` is generated from the models in ``kubeloop_runtime.api`` and
``kubeloop_runtime.resources`` by ``kubeloop_runtime.crdgen`` (``make crds``), the way
controller-gen generates CRDs from Go types and their ``+kubebuilder`` markers. Types, enums,
bounds, patterns, required fields and plain defaults come from pydantic itself; a field's
description is the docstring written under it (read by the generator from the source, as
pydantic's ``use_attribute_docstrings`` would at every import). What is left is
declared with these markers, all light (pydantic only) and inert at validation time:

- on a field, in its ``Annotated[...]``: ``Cel`` (an ``x-kubernetes-validations`` rule),
  ``IMMUTABLE``, ``keys_at_most`` (a map's key length), ``Default`` (a CRD default where pydantic
  has a factory), ``Format``, ``Untyped`` (mixed scalars), ``ListMap`` (list-map keys);
- on a model class, as a decorator: ``@Cel(...)``, a rule on every object of that model;
- on a resource class, as a decorator: ``@custom_resource(...)``: names, short names,
  categories, printer columns and the bound on ``metadata.name``.

A message may say ``{path}``: the generator puts in the field's path where the model is used
(``spec.dataset``, ``spec.retraining.template.dataset``), so one model reused in two places
names the right field in each. Items of a list and values of a map have the path of the list
or map.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# Where the markers leave their findings in pydantic's JSON schema, for the generator.
VALIDATIONS = "x-kubernetes-validations"
PRESERVE = "x-kubernetes-preserve-unknown-fields"
_CLASS_RULES = "__kubeloop_cel__"
_RESOURCE = "__kubeloop_resource__"

T = TypeVar("T", bound=type)


class _Marker:
    """A marker changes the field's JSON schema; pydantic's validation never sees it."""

    def apply(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        raise NotImplementedError

    def __get_pydantic_json_schema__(
        self, core: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return self.apply(handler(core))


@dataclass(frozen=True)
class Cel(_Marker):
    """A CEL rule (``x-kubernetes-validations``); its message names the field (``{path}``).

    In a field's ``Annotated[...]`` it checks that field; as a class decorator it checks every
    object of the model, wherever the model is used.
    """

    rule: str
    message: str
    field_path: str | None = None
    reason: (
        Literal[
            "FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"
        ]
        | None
    ) = None

    def as_schema(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path is not None:
            out["fieldPath"] = self.field_path
        if self.reason is not None:
            out["reason"] = self.reason
        return out

    def apply(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        schema.setdefault(VALIDATIONS, []).append(self.as_schema())
        return schema

    def __call__(self, cls: T) -> T:
        # Decorators run bottom-up; keep the rules in the order they are written.
        rules = cls.__dict__.get(_CLASS_RULES, ())
        setattr(cls, _CLASS_RULES, (self, *rules))
        return cls


def class_rules(cls: type) -> tuple[Cel, ...]:
    """The rules declared on this very class (a subclass does not inherit them)."""
    rules: tuple[Cel, ...] = cls.__dict__.get(_CLASS_RULES, ())
    return rules


IMMUTABLE = Cel("self == oldSelf", "{path} is immutable")


def keys_at_most(length: int, noun: str = "names") -> Cel:
    """A map whose keys are at most ``length`` characters (OpenAPI cannot bound keys)."""
    return Cel(
        f"self.all(k, size(k) <= {length})", f"{{path}} {noun} are at most {length} characters"
    )


@dataclass(frozen=True)
class Default(_Marker):
    """The default the API server fills in, where pydantic's default is a factory."""

    value: Any

    def apply(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        schema["default"] = self.value
        return schema


@dataclass(frozen=True)
class Format(_Marker):
    """An OpenAPI format: ``int64``, ``date-time``."""

    format: str

    def apply(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        schema["format"] = self.format
        return schema


INT64 = Format("int64")
DATE_TIME = Format("date-time")


@dataclass(frozen=True)
class Untyped(_Marker):
    """Mixed scalars (a string of at most ``max_length``, a number, a boolean, null).

    A structural schema cannot say "one of these types", so the value is untyped
    (``x-kubernetes-preserve-unknown-fields``) and bounded so that only scalars pass:
    ``minItems`` 1 with ``maxItems`` 0 refuses every list, and the same for maps. CEL cannot
    see untyped values, so these bounds are all the API server checks.
    """

    max_length: int

    def apply(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        return {
            PRESERVE: True,
            "maxLength": self.max_length,
            "minItems": 1,
            "maxItems": 0,
            "minProperties": 1,
            "maxProperties": 0,
        }


@dataclass(frozen=True)
class ListMap(_Marker):
    """A list keyed by ``keys`` (``x-kubernetes-list-type: map``), merged item by item."""

    keys: tuple[str, ...]

    def apply(self, schema: JsonSchemaValue) -> JsonSchemaValue:
        schema["x-kubernetes-list-type"] = "map"
        schema["x-kubernetes-list-map-keys"] = list(self.keys)
        return schema


def list_map(*keys: str) -> ListMap:
    return ListMap(keys)


# ------------------------------------------------------------------------ resources


@dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get`` (``additionalPrinterColumns``)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str | None = None
    priority: int | None = None

    def as_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type}
        if self.description is not None:
            out["description"] = self.description
        if self.priority is not None:
            out["priority"] = self.priority
        out["jsonPath"] = self.json_path
        return out


AGE = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


@dataclass(frozen=True)
class CustomResource:
    """What a CRD says about a kind beyond its schema."""

    plural: str
    short_names: tuple[str, ...]
    columns: tuple[PrinterColumn, ...]
    # metadata.name: the bound that leaves room for the children's names.
    name_max_length: int
    name_pattern: str
    name_description: str
    categories: tuple[str, ...] = ("kubeloop",)
    # A comment at the top of the generated file (why a short name, what the kind is).
    comment: str = ""


def custom_resource(
    *,
    plural: str,
    short_names: Sequence[str],
    columns: Sequence[PrinterColumn],
    name_max_length: int,
    name_pattern: str,
    name_description: str,
    comment: str = "",
) -> Callable[[T], T]:
    """Declare a model (fields ``spec`` and ``status``; its docstring describes the kind) a
    custom resource; its class name is the kind."""
    resource = CustomResource(
        plural=plural,
        short_names=tuple(short_names),
        columns=tuple(columns),
        name_max_length=name_max_length,
        name_pattern=name_pattern,
        name_description=name_description,
        comment=comment,
    )

    def mark(cls: T) -> T:
        setattr(cls, _RESOURCE, resource)
        return cls

    return mark


def resource_of(cls: type) -> CustomResource | None:
    found: CustomResource | None = cls.__dict__.get(_RESOURCE)
    return found
