"""crds/ is exactly what the models generate, and the generator says what the models say.

``kubeloop_runtime.crdgen`` writes crds/ from ``kubeloop_runtime.api`` and
``kubeloop_runtime.resources``. These tests check that the committed files are its output
byte for byte, that it turns each pydantic construct and marker into the structural schema
the API server needs (a worked example, whole), that its refusals and its semantic
comparison work, and that the CRD defaults the API server fills in parse to the same spec
as pydantic's own defaults.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml
from pydantic import BaseModel, Field

from kubeloop_runtime import crdgen
from kubeloop_runtime.api import (
    InferenceServiceSpec,
    Model,
    ModelVersionSpec,
    Scalar,
    TrainingJobSpec,
)
from kubeloop_runtime.crd import (
    DATE_TIME,
    IMMUTABLE,
    INT64,
    Cel,
    Default,
    PrinterColumn,
    Untyped,
    custom_resource,
    keys_at_most,
    list_map,
)

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
SAMPLES = REPO / "manifests" / "samples"
SPECS: dict[str, type[BaseModel]] = {
    "TrainingJob": TrainingJobSpec,
    "ModelVersion": ModelVersionSpec,
    "InferenceService": InferenceServiceSpec,
}
Schema = dict[str, Any]


# ------------------------------------------------------------- committed == generated


def test_committed_crds_are_the_generated_ones() -> None:
    generated = crdgen.files()
    committed = {p.name: p.read_text() for p in CRDS.glob("*.yaml")}
    assert sorted(committed) == sorted(generated)
    stale = [name for name, text in generated.items() if committed[name] != text]
    assert not stale, f"{stale} differ from the models: run `make crds`"


def test_check_fails_on_a_hand_edit_and_an_extra_file(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 0
    edited = tmp_path / "trainingjobs.kubeloop.io.yaml"
    edited.write_text(edited.read_text().replace("maxLength: 40", "maxLength: 41", 1))
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    (tmp_path / "stray.yaml").write_text("{}\n")
    assert crdgen.main(["--check", "--out", str(tmp_path)]) == 1


def test_compare_finds_only_real_differences(tmp_path: Path) -> None:
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.compare(tmp_path) == []
    path = tmp_path / "modelversions.kubeloop.io.yaml"
    doc = yaml.safe_load(path.read_text())
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    # Order, folding and 1 for 1.0 mean nothing ...
    spec["required"].reverse()
    spec["properties"] = dict(reversed(spec["properties"].items()))
    spec["properties"]["artifact"]["description"] += "  "
    spec["properties"]["version"]["minimum"] = 1.0
    path.write_text(yaml.safe_dump(doc))
    assert crdgen.compare(tmp_path) == []
    # ... a bound, a type, a rule and a column do.
    spec["properties"]["model"]["maxLength"] = 41
    spec["properties"]["gate"]["properties"]["passed"]["type"] = "string"
    del spec["properties"]["aliases"]["x-kubernetes-validations"]
    doc["spec"]["versions"][0]["additionalPrinterColumns"].pop()
    path.write_text(yaml.safe_dump(doc))
    found = crdgen.compare(tmp_path)
    assert len(found) == 4, found
    assert any("model.maxLength: old 41.0, new 40.0" in d for d in found), found


# -------------------------------------------------------- what the generator makes


class Inner(Model):
    """Used for the docstring when the field has none."""

    x: Annotated[int, Field(ge=0, le=9)] = 3
    """An x."""
    when: Annotated[str, Field(max_length=64), DATE_TIME] | None = None


@Cel("has(self.a) || has(self.b)", "{path}: set a or b", field_path=".a")
class Item(Model):
    key: Annotated[str, Field(min_length=1, max_length=8, pattern=r"^[a-z]+$")]
    a: bool | None = None
    b: Literal["one"] | None = None


class ToySpec(Model):
    ratio: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    """A share,
    folded onto one line."""
    count: Annotated[int, Field(ge=0), INT64, IMMUTABLE]
    inner: Annotated[Inner, Default({})] = Field(default_factory=Inner)
    other: Inner | None = None
    """The field's own words win."""
    items: Annotated[list[Item], Field(max_length=4), list_map("key")] | None = None
    labels: Annotated[dict[str, float], Field(max_length=2), keys_at_most(7)] | None = None
    loose: Annotated[dict[str, Annotated[Scalar, Untyped(max_length=5)]], Field(max_length=1)] = (
        Field(default_factory=dict)
    )


@custom_resource(
    plural="toys",
    short_names=("ty",),
    name_max_length=20,
    name_pattern="^[a-z]+$",
    name_description="A short name.",
    columns=(PrinterColumn("Ratio", "number", ".spec.ratio", priority=1),),
)
class Toy(Model):
    """Toy is a worked example."""

    spec: ToySpec
    status: Inner | None = None
    """Written by someone."""


INNER: Schema = {
    "x": {"type": "integer", "description": "An x.", "default": 3, "minimum": 0, "maximum": 9},
    "when": {"type": "string", "format": "date-time", "maxLength": 64},
}
TOY_SPEC: Schema = {
    "type": "object",
    "required": ["count"],
    "properties": {
        "ratio": {
            "type": "number",
            "description": "A share, folded onto one line.",
            "default": 0.5,
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": 1,
            "exclusiveMaximum": True,
        },
        "count": {
            "type": "integer",
            "format": "int64",
            "minimum": 0,
            "x-kubernetes-validations": [
                {"rule": "self == oldSelf", "message": "spec.count is immutable"}
            ],
        },
        "inner": {
            "type": "object",
            "description": "Used for the docstring when the field has none.",
            "default": {},
            "properties": INNER,
        },
        "other": {
            "type": "object",
            "description": "The field's own words win.",
            "properties": INNER,
        },
        "items": {
            "type": "array",
            "maxItems": 4,
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["key"],
            "items": {
                "type": "object",
                "required": ["key"],
                "x-kubernetes-validations": [
                    {
                        "rule": "has(self.a) || has(self.b)",
                        "message": "spec.items: set a or b",
                        "fieldPath": ".a",
                    }
                ],
                "properties": {
                    "key": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 8,
                        "pattern": "^[a-z]+$",
                    },
                    "a": {"type": "boolean"},
                    "b": {"type": "string", "enum": ["one"]},
                },
            },
        },
        "labels": {
            "type": "object",
            "maxProperties": 2,
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, size(k) <= 7)",
                    "message": "spec.labels names are at most 7 characters",
                }
            ],
            "additionalProperties": {"type": "number"},
        },
        "loose": {
            "type": "object",
            "maxProperties": 1,
            "additionalProperties": {
                "x-kubernetes-preserve-unknown-fields": True,
                "maxLength": 5,
                "minItems": 1,
                "maxItems": 0,
                "minProperties": 1,
                "maxProperties": 0,
            },
        },
    },
}


def test_the_worked_example_whole() -> None:
    doc = crdgen.crd(Toy)
    (version,) = doc["spec"]["versions"]
    root = version["schema"]["openAPIV3Schema"]
    assert root["properties"]["spec"] == TOY_SPEC
    assert root["description"] == "Toy is a worked example."
    assert root["required"] == ["spec"]
    assert root["properties"]["metadata"]["properties"]["name"] == {
        "type": "string",
        "description": "A short name.",
        "maxLength": 20,
        "pattern": "^[a-z]+$",
    }
    assert root["properties"]["status"]["description"] == "Written by someone."
    assert version["subresources"] == {"status": {}}
    assert version["additionalPrinterColumns"] == [
        {"name": "Ratio", "type": "number", "priority": 1, "jsonPath": ".spec.ratio"}
    ]
    assert doc["metadata"]["name"] == "toys.kubeloop.io"
    assert doc["spec"]["names"] == {
        "kind": "Toy",
        "listKind": "ToyList",
        "plural": "toys",
        "singular": "toy",
        "shortNames": ["ty"],
        "categories": ["kubeloop"],
    }
    # Markers change the JSON schema only: pydantic validates as before (no bound of 5).
    assert ToySpec.model_validate({"count": 1, "loose": {"a": "long text"}}).loose == {
        "a": "long text"
    }


def test_one_model_names_the_path_it_is_used_at() -> None:
    def dataset_rules(kind: str, *path: str) -> list[str]:
        node = crdgen.crd(_resource(kind))["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for name in ("spec", *path):
            node = node["properties"][name]
        return [r["message"] for r in node["x-kubernetes-validations"]]

    assert dataset_rules("TrainingJob", "dataset")[0].startswith("spec.dataset: exactly one")
    assert dataset_rules("InferenceService", "retraining", "template", "dataset")[0].startswith(
        "spec.retraining.template.dataset: exactly one"
    )


def _resource(kind: str) -> type[BaseModel]:
    (cls,) = [c for c in crdgen.resources() if c.__name__ == kind]
    return cls


class Mixed(Model):
    value: int | str = 0


class Plain(Model):
    value: int = 0


NOWHERE = custom_resource(
    plural="bads",
    short_names=(),
    name_max_length=9,
    name_pattern="^a$",
    name_description="x",
    columns=(PrinterColumn("Nowhere", "string", ".status.nothing"),),
)


@NOWHERE
class Mix(Model):
    """A union (refused before the columns are looked at)."""

    spec: Mixed


@NOWHERE
class BadColumn(Model):
    """A column that reads nothing."""

    spec: Plain


def test_the_generator_refuses_what_has_no_structural_schema() -> None:
    with pytest.raises(crdgen.SchemaError, match=r"spec\.value: a union of 2 types"):
        crdgen.crd(Mix)
    with pytest.raises(crdgen.SchemaError, match=r"Nowhere reads \.status\.nothing"):
        crdgen.crd(BadColumn)


# ------------------------------------------------------------ defaulting agrees


@functools.cache
def spec_schema(kind: str) -> Schema:
    doc = yaml.safe_load(crdgen.files()[f"{kind.lower()}s.kubeloop.io.yaml"])
    (version,) = doc["spec"]["versions"]
    spec: Schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return spec


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
            if doc and doc.get("kind") in SPECS:
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
    model = SPECS[kind]
    defaulted = apply_defaults(spec_schema(kind), spec)
    assert model.model_validate(defaulted) == model.model_validate(spec), case


def test_defaulting_is_checked_for_something() -> None:
    """The CRD defaults objects (Default({}) markers), so the comparison above has work."""
    defaulted = apply_defaults(spec_schema("TrainingJob"), MINIMAL[0][2])
    assert defaulted["evaluation"] == {
        "testSize": 0.2,
        "seed": 42,
        "cvFolds": 0,
        "stratify": True,
    }
