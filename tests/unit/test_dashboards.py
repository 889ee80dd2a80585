"""The Grafana dashboards: valid JSON Grafana can provision, wired to the provisioned
Prometheus datasource, querying only metrics Kubeloop (or Prometheus) actually exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promql import (
    HISTOGRAMS,
    OPERATOR_METRICS,
    SERVING_METRICS,
    balanced,
    known_series,
    selected_metrics,
)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "manifests" / "monitoring" / "dashboards"
DATASOURCES = ROOT / "manifests" / "monitoring" / "grafana" / "datasources.yaml"
EXPECTED = ("kubeloop-operator.json", "kubeloop-serving.json", "kubeloop-training.json")


def _files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def _load(p: Path) -> dict[str, Any]:
    doc = json.loads(p.read_text())
    assert isinstance(doc, dict)
    return doc


def _panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for p in doc.get("panels", []):
        yield p
        yield from p.get("panels", [])  # collapsed rows nest their panels


def _datasource_uid() -> str:
    prov = yaml.safe_load(DATASOURCES.read_text())
    (ds,) = [d for d in prov["datasources"] if d["type"] == "prometheus"]
    return str(ds["uid"])


_LABEL_VALUES = re.compile(r"^label_values\((?P<sel>.+),\s*(?P<label>[a-zA-Z_][a-zA-Z0-9_]*)\)$")


def promql_of(query: str) -> str:
    """The PromQL inside a Grafana variable query (label_values(selector, label))."""
    m = _LABEL_VALUES.match(query.strip())
    return m.group("sel") if m else query


def _exprs(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for p in _panels(doc):
        for t in p.get("targets", []):
            yield f"panel {p['id']} {p['title']!r} {t.get('refId')}", t["expr"]
    for v in doc.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query":
            yield f"variable {v['name']}", str(q)


def test_the_three_dashboards_exist() -> None:
    assert {p.name for p in _files()} >= set(EXPECTED)


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_dashboard_structure(path: Path) -> None:
    doc = _load(path)
    assert isinstance(doc.get("schemaVersion"), int) and doc["schemaVersion"] >= 36
    assert doc.get("uid") and len(doc["uid"]) <= 40
    assert doc.get("title", "").startswith("Kubeloop")
    ids = [p["id"] for p in _panels(doc)]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {sorted(ids)}"
    for p in _panels(doc):
        g = p["gridPos"]
        assert {"h", "w", "x", "y"} <= set(g), p["title"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"


def test_dashboard_uids_are_unique() -> None:
    uids = [_load(p)["uid"] for p in _files()]
    assert len(uids) == len(set(uids))


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_every_query_uses_the_provisioned_datasource(path: Path) -> None:
    uid = _datasource_uid()
    doc = _load(path)
    want = {"type": "prometheus", "uid": uid}
    for p in _panels(doc):
        if p["type"] == "row":
            continue
        assert p.get("datasource") == want, p["title"]
        for t in p["targets"]:
            assert t.get("datasource", want) == want, p["title"]
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            assert v["datasource"] == want, v["name"]


@pytest.mark.parametrize("path", _files(), ids=lambda p: p.name)
def test_queries_are_balanced_and_read_known_metrics(path: Path) -> None:
    known = known_series()
    seen: set[str] = set()
    for where, expr in _exprs(_load(path)):
        assert expr.strip(), where
        assert balanced(expr), f"{where}: unbalanced brackets in {expr!r}"
        metrics = selected_metrics(promql_of(expr))
        unknown = metrics - known
        assert not unknown, f"{where}: unknown metric(s) {sorted(unknown)} in {expr!r}"
        seen |= metrics
    assert seen, "the dashboard queries nothing"


def test_serving_dashboard_has_an_inferenceservice_variable() -> None:
    doc = _load(DASHBOARDS / "kubeloop-serving.json")
    names = {v["name"]: v for v in doc["templating"]["list"]}
    assert "inferenceservice" in names
    assert "kubeloop_serving_model_info" in names["inferenceservice"]["definition"]
    # Every serving panel filters by the variable.
    for where, expr in _exprs(doc):
        if where.startswith("panel"):
            assert "$inferenceservice" in expr, where


def test_dashboards_cover_the_contract() -> None:
    """Each exported metric is shown somewhere (a new metric needs a panel)."""
    shown: set[str] = set()
    for p in _files():
        for _, expr in _exprs(_load(p)):
            shown |= selected_metrics(expr)
    bare = {m.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count") for m in shown}
    missing = {m for m in OPERATOR_METRICS | SERVING_METRICS if m not in bare}
    assert not missing, f"metrics on no dashboard: {sorted(missing)}"
    assert bare >= HISTOGRAMS


def test_scanner_finds_metrics_and_ignores_the_rest() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (inferenceservice, le) "
        '(rate(kubeloop_serving_request_duration_seconds_bucket{namespace=~"$namespace", '
        'code=~"5.."}[$__rate_interval]))) / on (x) group_left up'
    )
    assert selected_metrics(expr) == {"kubeloop_serving_request_duration_seconds_bucket", "up"}
    assert balanced(expr)
    assert not balanced("sum(rate(x[5m])")
    assert selected_metrics("sum(rate(kubeloop_nonexistent_total[5m]))") == {
        "kubeloop_nonexistent_total"
    }
