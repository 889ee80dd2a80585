"""Generate ``crds/`` from the pydantic models, as controller-gen does from Go types.

    python -m kubeloop_runtime.crdgen                 # write crds/*.yaml (make crds)
    python -m kubeloop_runtime.crdgen --check         # fail if crds/ differs (make lint)
    python -m kubeloop_runtime.crdgen --compare DIR   # semantic differences from CRDs in DIR

Each resource class in ``kubeloop_runtime.resources`` (``@custom_resource``) becomes one
CustomResourceDefinition: its ``spec`` and ``status`` models give the schema through
pydantic's JSON schema, which is then made structural (references inlined, ``Optional``
unwrapped, ``const`` as ``enum``, exclusive bounds in OpenAPI 3.0's boolean form) with the
markers of ``kubeloop_runtime.crd`` applied and ``{path}`` filled in. ``--compare`` ignores
key order, the order of set-like lists and runs of white space, and prints every other
difference; it is how a hand-edited CRD (a branch from before the generator) is checked
against the regenerated one.

Size (~500 lines): one pass over the JSON schema, in the steps above, and the comparison
the check and ``--compare`` use; each is a section of this module.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import itertools
import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from kubeloop_runtime.api import (
    GROUP,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
    VERSION,
)
from kubeloop_runtime.crd import PRESERVE, VALIDATIONS, CustomResource, class_rules, resource_of

Schema = dict[str, Any]

# The order keys are written in (the rest, if any, after them): what a reader looks for first.
KEY_ORDER = (
    "type",
    "format",
    "description",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "required",
    PRESERVE,
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    VALIDATIONS,
    "properties",
    "additionalProperties",
    "items",
)
# pydantic's keys that a structural schema does not carry, and our own note.
FIELD_DOCS = "x-kubeloop-field-docs"
DROPPED = {"title", "$defs", FIELD_DOCS}


class SchemaError(ValueError):
    """A model says something the generator cannot turn into a structural schema."""


def field_docstrings(cls: type) -> dict[str, str]:
    """The string written under each field of a class, by field name.

    What pydantic's ``use_attribute_docstrings`` reads, read here from the source only when
    generating, so that importing the models costs nothing more.
    """
    (tree,) = ast.parse(textwrap.dedent(inspect.getsource(cls))).body
    assert isinstance(tree, ast.ClassDef)
    docs = {}
    for field, after in itertools.pairwise(tree.body):
        if (
            isinstance(field, ast.AnnAssign)
            and isinstance(field.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[field.target.id] = after.value.value
    return docs


def _alias(cls: type[BaseModel], name: str) -> str:
    """A field's wire name (a model built before a forward reference resolved has its
    ``FieldInfo.alias`` unset, so ask the alias generator)."""
    alias = cls.model_fields[name].alias
    generate = cls.model_config.get("alias_generator")
    if alias is None and callable(generate):
        alias = str(generate(name))
    return alias or name


class _Generator(GenerateJsonSchema):
    """pydantic's JSON schema, with each model's field docstrings as descriptions and its
    class-level CEL rules on its definition."""

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        out = super().model_schema(schema)
        cls: type[BaseModel] = schema["cls"]
        # On the model's own schema (pydantic may still replace its properties' dicts).
        out[FIELD_DOCS] = {
            _alias(cls, name): doc
            for name, doc in field_docstrings(cls).items()
            if name in cls.model_fields
        }
        rules = [r.as_schema() for r in class_rules(cls)]
        if rules:
            out[VALIDATIONS] = [*out.get(VALIDATIONS, []), *rules]
        return out


def _text(value: str) -> str:
    """Docstrings and rules as one line: runs of white space folded, as YAML's ``>-`` does."""
    return " ".join(value.split())


def _merge(base: Schema, over: Schema) -> Schema:
    """A referenced schema with the referring field's keys over it. The field's docstring
    wins over the model's (as a Go field's comment does over its type's); rules add up,
    the field's first (an ``IMMUTABLE`` on the field, then the model's own rules)."""
    out = {k: v for k, v in base.items() if k != "title"}
    for key, value in over.items():
        if key == VALIDATIONS:
            out[key] = [*value, *base.get(VALIDATIONS, [])]
        else:
            out[key] = value
    return out


def _number(value: Any) -> Any:
    """1.0 as 1: the API server treats them alike; this is how a person writes a bound."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def structural(node: Schema, defs: Schema, path: str) -> Schema:
    """One node of pydantic's JSON schema as a structural OpenAPI v3 schema."""
    node = dict(node)
    while True:
        if "$ref" in node:
            target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
            node = _merge(target, node)
        elif "anyOf" in node:
            options = [o for o in node["anyOf"] if o != {"type": "null"}]
            if len(options) != 1:
                raise SchemaError(
                    f"{path}: a union of {len(options)} types has no structural schema;"
                    " mark it Untyped(...) if it holds mixed scalars"
                )
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if rest.get("default", 0) is None:
                del rest["default"]
            node = _merge(options[0], rest)
        else:
            break
    for key in ("allOf", "oneOf", "not"):
        if key in node:
            raise SchemaError(f"{path}: {key} has no place in a structural schema")

    out: Schema = {}
    for key, value in node.items():
        if key in DROPPED or (key == "additionalProperties" and value is False):
            continue
        if key == "const":
            out["enum"] = [value]
        elif key in {"exclusiveMinimum", "exclusiveMaximum"} and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = _number(value)
            out[key] = True
        elif key == "description":
            out[key] = _text(value)
        elif key == "default" and value is None:
            continue
        elif key == VALIDATIONS:
            out[key] = [_rule(r, path) for r in value]
        elif key == "properties":
            docs = node.get(FIELD_DOCS, {})
            out[key] = {
                name: structural(
                    {"description": docs[name], **sub} if name in docs else sub,
                    defs,
                    f"{path}.{name}",
                )
                for name, sub in value.items()
            }
        elif key in {"items", "additionalProperties"}:
            out[key] = structural(value, defs, path)
        else:
            out[key] = _numbers(value)
    if "type" not in out and not out.get(PRESERVE):
        raise SchemaError(f"{path}: no type")
    return _ordered(out)


RULE_KEYS = ("rule", "message", "fieldPath", "reason")


def _rule(rule: dict[str, str], path: str) -> dict[str, str]:
    """A CEL rule with ``{path}`` in its message filled in (keys in a reader's order)."""
    out = {k: _text(rule[k]) for k in RULE_KEYS if k in rule}
    out["message"] = out["message"].replace("{path}", path)
    return out


def _numbers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return _number(value)


def _ordered(node: Schema) -> Schema:
    rank = {k: i for i, k in enumerate(KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def openapi_schema(cls: type[BaseModel], resource: CustomResource) -> Schema:
    """The ``openAPIV3Schema`` of a resource class."""
    raw = cls.model_json_schema(by_alias=True, mode="validation", schema_generator=_Generator)
    defs: Schema = raw.get("$defs", {})
    properties: Schema = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {
            "type": "object",
            "properties": {
                "name": {
                    "type": "string",
                    "description": _text(resource.name_description),
                    "maxLength": resource.name_max_length,
                    "pattern": resource.name_pattern,
                }
            },
        },
    }
    docs = raw.get(FIELD_DOCS, {})
    for name, sub in raw["properties"].items():
        properties[name] = structural(
            {"description": docs[name], **sub} if name in docs else sub, defs, name
        )
    root: Schema = {
        "type": "object",
        "description": _text(cls.__doc__ or ""),
        "required": raw.get("required", []),
        "properties": properties,
    }
    if not root["description"]:
        raise SchemaError(f"{cls.__name__}: a resource's docstring describes the kind")
    return root


def _field(schema: Schema, json_path: str) -> Schema | None:
    """The schema node a printer column's simple JSON path reaches (None: nowhere)."""
    node: Schema | None = schema
    for part in re.sub(r"\[[^\]]*\]", "[]", json_path).lstrip(".").split("."):
        if node is None:
            return None
        name = part.removesuffix("[]")
        if name in node.get("properties", {}):
            node = node["properties"][name]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
        if part.endswith("[]"):
            node = node.get("items")
    return node


def crd(cls: type[BaseModel]) -> Schema:
    """The CustomResourceDefinition of a resource class."""
    resource = resource_of(cls)
    if resource is None:
        raise SchemaError(f"{cls.__name__} is not marked @custom_resource")
    kind = cls.__name__
    schema = openapi_schema(cls, resource)
    for column in resource.columns:
        if (
            not column.json_path.startswith(".metadata.")
            and _field(schema, column.json_path) is None
        ):
            raise SchemaError(
                f"{kind}: printer column {column.name} reads {column.json_path},"
                " which the schema does not have"
            )
    version: Schema = {"name": VERSION, "served": True, "storage": True}
    if "status" in schema["properties"]:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = [c.as_schema() for c in resource.columns]
    version["schema"] = {"openAPIV3Schema": schema}
    names: Schema = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": resource.plural,
        "singular": kind.lower(),
        "shortNames": list(resource.short_names),
        "categories": list(resource.categories),
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{resource.plural}.{GROUP}",
            "labels": {LABEL_NAME: MANAGED_BY, LABEL_PART_OF: MANAGED_BY},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": names,
            "versions": [version],
        },
    }


# ------------------------------------------------------------------------- writing


class _Dumper(yaml.SafeDumper):
    """Block mappings, indented block lists, lists of scalars in flow style ([a, b]), no
    anchors: how the CRDs were written by hand."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flow = all(not isinstance(v, dict | list) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


def _represent_dict(dumper: yaml.SafeDumper, data: dict[str, Any]) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=not data)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(dict, _represent_dict)

HEADER = """\
# Generated from kubeloop_runtime.api and kubeloop_runtime.resources by `make crds`
# (python -m kubeloop_runtime.crdgen). Do not edit: change the models and regenerate
# (docs/development.md, "Changing the API").
"""


def render(doc: Any, comment: str = "") -> str:
    lines = "".join(f"# {line}".rstrip() + "\n" for line in comment.strip().splitlines())
    body = yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=96, allow_unicode=True)
    return (lines + "#\n" if lines else "") + HEADER + body


def resources() -> list[type[BaseModel]]:
    from kubeloop_runtime import resources as module  # noqa: PLC0415 (api, then resources)

    return list(module.RESOURCES)


def files() -> dict[str, str]:
    """Every file of crds/, by name: one CRD per resource and the kustomization."""
    return dict(_files())


@functools.cache
def _files() -> dict[str, str]:
    out: dict[str, str] = {}
    for cls in resources():
        resource = resource_of(cls)
        assert resource is not None
        out[f"{resource.plural}.{GROUP}.yaml"] = render(crd(cls), resource.comment)
    out["kustomization.yaml"] = (
        HEADER
        + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
        + "".join(f"  - {name}\n" for name in out)
    )
    return out


# ------------------------------------------------------------------------ comparing

# Lists whose order means nothing to the API server.
SET_LISTS = {"required", "enum", "shortNames", "categories", "x-kubernetes-list-map-keys"}


def normalised(value: Any, key: str = "") -> Any:
    """A CRD document with key order, set-like list order and white space made irrelevant."""
    if isinstance(value, dict):
        return {k: normalised(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [normalised(v) for v in value]
        if key in SET_LISTS:
            return sorted(items, key=repr)
        if key == VALIDATIONS:
            return sorted(items, key=lambda r: r.get("rule", ""))
        return items
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return float(value)
    return value


def differences(old: Any, new: Any, path: str = "") -> Iterator[str]:
    """Every place two normalised documents differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else key
            if key not in new:
                yield f"{sub}: only in the old: {old[key]!r}"
            elif key not in old:
                yield f"{sub}: only in the new: {new[key]!r}"
            else:
                yield from differences(old[key], new[key], sub)
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            yield from differences(a, b, f"{path}[{i}]")
    elif type(old) is not type(new) or old != new:
        yield f"{path}: old {old!r}, new {new!r}"


def compare(directory: Path) -> list[str]:
    out = []
    for name, text in files().items():
        if name == "kustomization.yaml":
            continue
        theirs = directory / name
        if not theirs.exists():
            out.append(f"{name}: not in {directory}")
            continue
        old = normalised(yaml.safe_load(theirs.read_text()))
        new = normalised(yaml.safe_load(text))
        out += [f"{name}: {d}" for d in differences(old, new)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubeloop_runtime.crdgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("crds"), help="default: crds")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="fail if --out differs")
    mode.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="print the semantic differences from the CRDs in DIR",
    )
    args = parser.parse_args(argv)
    generated = files()
    if args.compare is not None:
        found = compare(args.compare)
        sys.stdout.write(("\n".join(found) if found else "no semantic differences") + "\n")
        return 1 if found else 0
    if args.check:
        stale = sorted(
            name
            for name, text in generated.items()
            if not (args.out / name).exists() or (args.out / name).read_text() != text
        )
        extra = sorted(p.name for p in args.out.glob("*.yaml") if p.name not in generated)
        for name in stale:
            sys.stderr.write(f"{args.out / name} is not what the models generate\n")
        for name in extra:
            sys.stderr.write(f"{args.out / name} is generated by no model\n")
        if stale or extra:
            sys.stderr.write("run `make crds` and commit the result\n")
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generated.items():
        (args.out / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
