"""Every string, list and map in the CRDs is bounded, and the largest valid spec is small.

Bounds keep CEL rules inside the API server's cost budget and keep objects small: kopf copies
the spec into an annotation (all annotations together must stay under 256 KiB).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CRDS = REPO / "crds"
FILES = {
    "TrainingJob": "trainingjobs.kubeloop.io.yaml",
    "ModelVersion": "modelversions.kubeloop.io.yaml",
    "InferenceService": "inferenceservices.kubeloop.io.yaml",
}
PRESERVE = "x-kubernetes-preserve-unknown-fields"
# The only places a value is untyped: mixed scalars (the Untyped marker, kubeloop_runtime.crd).
PRESERVED = {
    "spec.estimator.hyperparameters{}",
    "spec.retraining.template.estimator.hyperparameters{}",
    "spec.signature.output.classes[]",
}
# Hyperparameter names are scikit-learn constructor argument names (short). Admission cannot
# bound them: no CEL type exists for a map of untyped values. The sizing assumes this length.
HYPERPARAMETER_NAME = 64
Schema = dict[str, Any]


def crd(kind: str) -> Schema:
    doc: Schema = yaml.safe_load((CRDS / FILES[kind]).read_text())
    return doc


def root(kind: str) -> Schema:
    (version,) = crd(kind)["spec"]["versions"]
    schema: Schema = version["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: Schema, path: str) -> Iterator[tuple[str, Schema]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")


def all_nodes(kind: str) -> Iterator[tuple[str, Schema]]:
    props = root(kind)["properties"]
    yield from nodes(props["spec"], "spec")
    yield from nodes(props["status"], "status")


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_string_list_and_map_is_bounded(kind: str) -> None:
    unbounded = []
    for path, node in all_nodes(kind):
        kind_of = node.get("type")
        if kind_of == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(f"{path}: string without maxLength")
        if kind_of == "array" and "maxItems" not in node:
            unbounded.append(f"{path}: list without maxItems")
        is_map = isinstance(node.get("additionalProperties"), dict) or (
            kind_of == "object" and node.get(PRESERVE)
        )
        if is_map and "maxProperties" not in node:
            unbounded.append(f"{path}: map without maxProperties")
        if kind_of is None and not node.get(PRESERVE):
            unbounded.append(f"{path}: no type")
    assert not unbounded, "\n".join(unbounded)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_preserve_unknown_fields_only_where_intended(kind: str) -> None:
    preserved = {path for path, node in all_nodes(kind) if node.get(PRESERVE)}
    assert preserved <= PRESERVED, preserved - PRESERVED
    nodes_by_path = dict(all_nodes(kind))
    for path in preserved:
        node = nodes_by_path[path]
        # Scalars only: minItems 1 with maxItems 0 refuses every list (and the same for
        # maps); strings are bounded.
        assert (node["minItems"], node["maxItems"]) == (1, 0)
        assert (node["minProperties"], node["maxProperties"]) == (1, 0)
        assert node["maxLength"] > 0
        assert "type" not in node
    assert not root(kind)["properties"]["status"].get(PRESERVE)


@pytest.mark.parametrize("kind", sorted(FILES))
def test_every_cel_rule_has_a_message_naming_its_field(kind: str) -> None:
    for path, node in all_nodes(kind):
        for rule in node.get("x-kubernetes-validations", []):
            message = rule.get("message") or rule.get("messageExpression")
            assert message, f"{path}: rule {rule['rule']!r} has no message"
            # The API server prefixes the path; the message repeats the field for humans
            # reading it elsewhere (events, logs).
            leaf = path.rsplit(".", 1)[-1].strip("[]{}")
            named = {leaf, path, *(p.strip("[]{}") for p in path.split("."))}
            assert any(n and n in message for n in named), f"{path}: {message!r}"


@pytest.mark.parametrize("kind", sorted(FILES))
def test_conditions_follow_the_api_conventions(kind: str) -> None:
    status = root(kind)["properties"]["status"]["properties"]
    assert status["observedGeneration"]["type"] == "integer"
    conditions = status["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert set(item["properties"]) == {
        "type",
        "status",
        "reason",
        "message",
        "lastTransitionTime",
        "observedGeneration",
    }
    assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert set(item["required"]) == {"type", "status"}


@pytest.mark.parametrize("kind", sorted(FILES))
def test_names_and_categories(kind: str) -> None:
    doc = crd(kind)
    names = doc["spec"]["names"]
    assert names["kind"] == kind
    assert doc["metadata"]["name"] == f"{names['plural']}.kubeloop.io"
    assert names["categories"] == ["kubeloop"]
    assert "isvc" not in names.get("shortNames", [])
    (version,) = doc["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    assert doc["spec"]["scope"] == "Namespaced"


def test_kustomization_lists_every_crd() -> None:
    kustomization = yaml.safe_load((CRDS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(FILES.values())


# ------------------------------------------------------------------ largest valid spec

NUMBER = len(json.dumps(-1.2345678901234567e-308))  # the longest float JSON text
INT64 = len(str(-(2**63)))
# Bytes per character of a free-form string in the worst case (UTF-8 of a 4-byte rune);
# strings whose pattern admits only ASCII count one byte per character.
ASCII_ONLY = re.compile(r"^\^[\[\]\(\)\-._a-zA-Z0-9{}0-9,?*+|$/\\% ]*\$$")


def _key_bound(node: Schema) -> int:
    """The longest map key a CEL rule `self.all(k, size(k) <= N ...)` admits."""
    for rule in node.get("x-kubernetes-validations", []):
        m = re.search(r"self\.all\(k, size\(k\) <= (\d+)", rule["rule"])
        if m:
            return int(m.group(1))
    raise AssertionError(f"map without a key-length rule: {node}")


def _string(node: Schema, utf8: bool) -> int:
    if "enum" in node:
        return max(len(json.dumps(v)) for v in node["enum"])
    pattern = node.get("pattern", "")
    per_char = (
        1 if (not utf8 or (pattern and ASCII_ONLY.match(pattern) and "\\S" not in pattern)) else 4
    )
    return 2 + per_char * int(node["maxLength"])


def largest(node: Schema, path: str, utf8: bool) -> int:
    """Bytes of the longest compact JSON a node admits (counting UTF-8 when utf8)."""
    kind = node.get("type")
    if path.endswith(".hyperparameters{}") or path.endswith(".classes[]"):
        return max(NUMBER, _string(node, utf8))
    if path.endswith(".hyperparameters"):
        key = 2 + HYPERPARAMETER_NAME * (4 if utf8 else 1)
        value = largest(node["additionalProperties"], f"{path}{{}}", utf8)
        return 2 + node["maxProperties"] * (key + 1 + value + 1)
    if kind == "string":
        return _string(node, utf8)
    if kind == "integer":
        low, high = node.get("minimum"), node.get("maximum")
        if low is not None and high is not None:
            return max(len(str(int(low))), len(str(int(high))))
        return INT64
    if kind == "number":
        return NUMBER
    if kind == "boolean":
        return len("false")
    if kind == "array":
        item = largest(node["items"], f"{path}[]", utf8)
        return 2 + node["maxItems"] * (item + 1)
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        key = 2 + _key_bound(node) * (4 if utf8 else 1)
        value = largest(node["additionalProperties"], f"{path}{{}}", utf8)
        return 2 + node["maxProperties"] * (key + 1 + value + 1)
    if kind == "object":
        total = 2
        for name, sub in node.get("properties", {}).items():
            total += len(name) + 3 + largest(sub, f"{path}.{name}", utf8) + 1
        if path == "spec.signature":
            # CEL: at most 512 categories over all inputs, not 256 on each of 256 inputs.
            inputs = node["properties"]["inputs"]
            categories = inputs["items"]["properties"]["categories"]
            per_item = largest(categories["items"], "", utf8) + 1
            without = largest(inputs, "", utf8) - inputs["maxItems"] * (
                len('"categories":') + 1 + largest(categories, "", utf8)
            )
            total -= largest(inputs, "", utf8)
            total += without + 512 * per_item
        return total
    raise AssertionError(f"{path}: cannot size {node}")


LIMIT = 256 * 1024


@pytest.mark.parametrize("kind", sorted(FILES))
def test_largest_valid_spec_is_well_under_256_kib(kind: str) -> None:
    spec = root(kind)["properties"]["spec"]
    ascii_size = largest(spec, "spec", utf8=False)
    utf8_size = largest(spec, "spec", utf8=True)
    # Realistic text is ASCII: keep that under 3/4 of the annotation limit. Even all-emoji
    # text must fit the API server's 1.5 MiB request limit.
    assert ascii_size < 0.75 * LIMIT, f"{kind}: {ascii_size} bytes"
    assert utf8_size < 1.5 * 1024 * 1024, f"{kind}: {utf8_size} bytes"


def test_sizing_counts_what_it_should() -> None:
    """The size of a small schema, worked out by hand."""
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "maxLength": 3},
            "b": {"type": "array", "maxItems": 2, "items": {"type": "boolean"}},
        },
    }
    # {"a":"xxx","b":[false,false]} has 30 characters; the sizer allows one spare comma.
    assert len('{"a":"xxx","b":[false,false]}') <= largest(schema, "x", utf8=False) <= 32
