"""The hand-written CRD schemas in crds/ say exactly what the pydantic models say.

Walks each CRD's ``spec`` schema side by side with ``Model.model_json_schema(by_alias=True)``
and reports every field present on one side only, and every difference in type, enum,
required fields, bounds (minimum/maximum and their exclusiveness, min/maxLength,
min/maxItems, min/maxProperties), pattern and default. A second test proves the CRD's
defaults produce the same parsed spec as pydantic's defaults.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from kubeloop_runtime.api import InferenceServiceSpec, ModelVersionSpec, TrainingJobSpec

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
SAMPLES = REPO / "manifests" / "samples"

KINDS: dict[str, tuple[str, type[BaseModel]]] = {
    "TrainingJob": ("trainingjobs.kubeloop.io.yaml", TrainingJobSpec),
    "ModelVersion": ("modelversions.kubeloop.io.yaml", ModelVersionSpec),
    "InferenceService": ("inferenceservices.kubeloop.io.yaml", InferenceServiceSpec),
}

Schema = dict[str, Any]
SCALAR_TYPES = {"integer", "number", "string", "boolean", "null"}
BOUND_KEYS = (
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "pattern",
)
PRESERVE = "x-kubernetes-preserve-unknown-fields"


def crd_spec_schema(kind: str) -> Schema:
    doc = yaml.safe_load((CRDS / KINDS[kind][0]).read_text())
    (version,) = doc["spec"]["versions"]
    spec: Schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


def pydantic_schema(kind: str) -> Schema:
    return KINDS[kind][1].model_json_schema(by_alias=True)


def _resolve(node: Schema, defs: Schema) -> Schema:
    """Follow $ref and unwrap Optional (anyOf [X, null]), keeping sibling keys like default."""
    while True:
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[-1]]
            rest = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **rest}
            continue
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o != {"type": "null"}]
            if len(options) == 1:
                rest = {k: v for k, v in node.items() if k != "anyOf"}
                node = {**options[0], **rest}
                continue
        return node


def _is_scalar_union(node: Schema) -> bool:
    options = node.get("anyOf")
    return (
        bool(options)
        and {o.get("type") for o in options} <= SCALAR_TYPES
        and all(set(o) == {"type"} for o in options)
    )


def _lower(node: Schema) -> tuple[float | None, bool]:
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        return float(node["exclusiveMinimum"]), True
    if "minimum" in node:
        return float(node["minimum"]), bool(node.get("exclusiveMinimum", False))
    return None, False


def _upper(node: Schema) -> tuple[float | None, bool]:
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        return float(node["exclusiveMaximum"]), True
    if "maximum" in node:
        return float(node["maximum"]), bool(node.get("exclusiveMaximum", False))
    return None, False


def _enum(node: Schema) -> set[Any] | None:
    if "const" in node:
        return {node["const"]}
    if "enum" in node:
        return set(node["enum"])
    return None


def compare(crd: Schema, py: Schema, defs: Schema, path: str = "spec") -> list[str]:
    """Every difference between a CRD schema node and a pydantic JSON-schema node."""
    diffs: list[str] = []
    py = _resolve(py, defs)

    if _is_scalar_union(py):
        # Mixed scalars (hyperparameter values, class labels): a structural schema cannot
        # say it, so the CRD leaves the value untyped (x-kubernetes-preserve-unknown-fields)
        # and bounds it (maxLength for strings; maxItems/maxProperties 0 refuse lists and
        # maps). CEL cannot see untyped values, so these bounds are all admission checks.
        if not crd.get(PRESERVE) or "type" in crd:
            diffs.append(
                f"{path}: pydantic takes mixed scalars, the CRD must be untyped {PRESERVE}"
            )
        return diffs
    if crd.get(PRESERVE):
        diffs.append(f"{path}: the CRD preserves unknown fields, pydantic does not")

    if crd.get("type") != py.get("type"):
        diffs.append(f"{path}: type {crd.get('type')!r} in the CRD, {py.get('type')!r} in pydantic")
        return diffs
    if _enum(crd) != _enum(py):
        diffs.append(f"{path}: enum {_enum(crd)} in the CRD, {_enum(py)} in pydantic")
    for key in BOUND_KEYS:
        if crd.get(key) != py.get(key):
            diffs.append(f"{path}: {key} {crd.get(key)!r} in the CRD, {py.get(key)!r} in pydantic")
    if _lower(crd) != _lower(py):
        diffs.append(f"{path}: lower bound {_lower(crd)} in the CRD, {_lower(py)} in pydantic")
    if _upper(crd) != _upper(py):
        diffs.append(f"{path}: upper bound {_upper(crd)} in the CRD, {_upper(py)} in pydantic")
    if py.get("default") is not None:
        if "default" not in crd or crd["default"] != py["default"]:
            diffs.append(
                f"{path}: default {crd.get('default')!r} in the CRD, {py['default']!r} in pydantic"
            )
    elif "default" in crd and not isinstance(crd["default"], dict):
        # Object defaults ({}) stand for pydantic's default_factory; test_defaults_agree
        # checks they mean the same thing.
        diffs.append(f"{path}: default {crd['default']!r} in the CRD only")

    if py.get("type") == "object":
        crd_props: Schema = crd.get("properties", {})
        py_props: Schema = py.get("properties", {})
        for name in sorted(set(crd_props) - set(py_props)):
            diffs.append(f"{path}.{name}: in the CRD only")
        for name in sorted(set(py_props) - set(crd_props)):
            diffs.append(f"{path}.{name}: in pydantic only")
        if set(crd.get("required", [])) != set(py.get("required", [])):
            diffs.append(
                f"{path}: required {sorted(crd.get('required', []))} in the CRD,"
                f" {sorted(py.get('required', []))} in pydantic"
            )
        for name in sorted(set(crd_props) & set(py_props)):
            diffs += compare(crd_props[name], py_props[name], defs, f"{path}.{name}")
        py_values = py.get("additionalProperties")
        if isinstance(py_values, dict):
            if "additionalProperties" not in crd:
                diffs.append(f"{path}: a map in pydantic, not in the CRD")
            else:
                diffs += compare(crd["additionalProperties"], py_values, defs, f"{path}{{}}")
        elif "additionalProperties" in crd:
            diffs.append(f"{path}: a map in the CRD, not in pydantic")
    elif py.get("type") == "array":
        diffs += compare(crd.get("items", {}), py["items"], defs, f"{path}[]")
    return diffs


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_crd_spec_matches_pydantic(kind: str) -> None:
    py = pydantic_schema(kind)
    diffs = compare(crd_spec_schema(kind), py, py.get("$defs", {}))
    assert not diffs, f"{kind}: the CRD and the pydantic model disagree:\n" + "\n".join(diffs)


# ----------------------------------------------------------- the comparison can fail


def _mutations() -> list[tuple[str, Any]]:
    def drop_field(s: Schema) -> None:
        del s["properties"]["dataset"]["properties"]["url"]

    def extra_field(s: Schema) -> None:
        s["properties"]["estimator"]["properties"]["extra"] = {"type": "string", "maxLength": 1}

    def change_type(s: Schema) -> None:
        s["properties"]["evaluation"]["properties"]["seed"]["type"] = "number"

    def change_enum(s: Schema) -> None:
        s["properties"]["estimator"]["properties"]["type"]["enum"].append("CatBoostClassifier")

    def change_max(s: Schema) -> None:
        s["properties"]["evaluation"]["properties"]["cvFolds"]["maximum"] = 21

    def change_exclusive(s: Schema) -> None:
        del s["properties"]["evaluation"]["properties"]["testSize"]["exclusiveMinimum"]

    def change_max_length(s: Schema) -> None:
        s["properties"]["model"]["maxLength"] = 41

    def change_max_items(s: Schema) -> None:
        s["properties"]["qualityGate"]["properties"]["thresholds"]["maxItems"] = 17

    def change_pattern(s: Schema) -> None:
        s["properties"]["dataset"]["properties"]["url"]["pattern"] = "^.*$"

    def change_required(s: Schema) -> None:
        s["required"].remove("estimator")

    def change_default(s: Schema) -> None:
        s["properties"]["evaluation"]["properties"]["testSize"]["default"] = 0.3

    def change_max_properties(s: Schema) -> None:
        s["properties"]["nodeSelector"]["maxProperties"] = 17

    def type_hyperparameters(s: Schema) -> None:
        hp = s["properties"]["estimator"]["properties"]["hyperparameters"]
        hp["additionalProperties"] = {"type": "string", "maxLength": 10}

    def preserve_a_typed_field(s: Schema) -> None:
        s["properties"]["preprocessing"][PRESERVE] = True

    return [
        (f.__name__, f)
        for f in (
            drop_field,
            extra_field,
            change_type,
            change_enum,
            change_max,
            change_exclusive,
            change_max_length,
            change_max_items,
            change_pattern,
            change_required,
            change_default,
            change_max_properties,
            type_hyperparameters,
            preserve_a_typed_field,
        )
    ]


@pytest.mark.parametrize(("name", "mutate"), _mutations())
def test_comparison_catches(name: str, mutate: Any) -> None:
    schema = copy.deepcopy(crd_spec_schema("TrainingJob"))
    mutate(schema)
    py = pydantic_schema("TrainingJob")
    assert compare(schema, py, py.get("$defs", {})), f"{name} went unnoticed"


# -------------------------------------------------------------------- defaulting agrees


def apply_defaults(schema: Schema, value: Any) -> Any:
    """Structural defaulting as the API server does it: fill absent properties, recurse."""
    if isinstance(value, dict):
        out = dict(value)
        props: Schema = schema.get("properties", {})
        for name, sub in props.items():
            if name not in out and "default" in sub:
                out[name] = copy.deepcopy(sub["default"])
            if name in out:
                out[name] = apply_defaults(sub, out[name])
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            out = {k: apply_defaults(values, v) for k, v in out.items()}
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _sample_specs() -> list[tuple[str, str, Any]]:
    specs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") in KINDS:
                specs.append((f"{path.name}:{doc['kind']}", doc["kind"], doc["spec"]))
    return specs


MINIMAL: list[tuple[str, str, Any]] = [
    (
        "minimal TrainingJob",
        "TrainingJob",
        {"model": "m", "dataset": {"builtin": "iris"}, "estimator": {"type": "SVC"}},
    ),
    (
        "minimal InferenceService",
        "InferenceService",
        {"model": {"modelVersion": "m-v1"}},
    ),
    (
        "InferenceService with empty optional objects",
        "InferenceService",
        {
            "model": {"model": "m", "alias": "production"},
            "autoscaling": {},
            "canary": {"modelVersion": "m-v2", "analysis": {}},
            "retraining": {
                "template": {"dataset": {"builtin": "iris"}, "estimator": {"type": "SVC"}}
            },
        },
    ),
]


@pytest.mark.parametrize(
    ("case", "kind", "spec"),
    MINIMAL + _sample_specs(),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_defaults_agree(case: str, kind: str, spec: Any) -> None:
    """The spec the API server stores (CRD defaults applied) parses to the same model."""
    model = KINDS[kind][1]
    defaulted = apply_defaults(crd_spec_schema(kind), spec)
    assert model.model_validate(defaulted) == model.model_validate(spec), case
