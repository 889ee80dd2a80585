"""The UI's pure view models and HTML (kubeloop.ui.views, kubeloop.ui.render)."""

from __future__ import annotations

from typing import Any

from kubeloop.ui import render, views
from kubeloop_runtime.drift import DriftReport, FeatureDrift


def mv(
    version: int, acc: float, *, aliases: list[str] | None = None, tj: str = ""
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"m-v{version}"},
        "spec": {
            "model": "m",
            "version": version,
            "metrics": {"accuracy": acc},
            "lineage": {"trainingJob": tj} if tj else {},
        },
        "status": {"aliases": aliases or []},
    }


def test_model_page_orders_versions_and_charts_the_metric_oldest_first() -> None:
    p = views.model_page([mv(2, 0.9), mv(1, 0.8), mv(3, 0.95)], "m")
    assert [r.version for r in p.rows] == [3, 2, 1]
    assert p.chart_metric == "accuracy"
    assert p.points == ((1, 0.8), (2, 0.9), (3, 0.95))
    html = render.chart("accuracy", p.points)
    assert "highest 0.95 at v3" in html and "lowest 0.8 at v1" in html


def test_model_page_pages_rows_but_the_chart_keeps_every_version() -> None:
    p = views.model_page([mv(v, 0.5 + v / 1000) for v in range(1, 251)], "m")
    html = render.model_page(p, page_no=3)
    assert html.count('<tr id="m-v') == 50 and "page 3 of 3" in html
    assert "across 250 versions" in html


def test_the_run_trained_against_a_version_replaced_it_and_says_why() -> None:
    run = {
        "metadata": {"name": "svc-retrain-1"},
        "spec": {
            "champion": "m-v1",
            "trigger": {"signal": "drift", "value": "0.3", "inferenceService": "svc"},
        },
        "status": {"gate": {"passed": True, "message": "beats champion"}},
    }
    page = views.lineage_page(
        mv(1, 0.8), [mv(1, 0.8), mv(2, 0.9, aliases=["prod"], tj="svc-retrain-1")], [run]
    )
    (r,) = page.replaced_by
    assert (r.model_version, r.why, r.gate, r.promoted) == (
        "m-v2",
        "drift=0.3 on svc",
        "beats champion",
        True,
    )


def test_timeline_from_runs_analysis_and_events_newest_first() -> None:
    isvc = {
        "metadata": {"name": "svc"},
        "status": {
            "analysis": {
                "decision": "Rollback",
                "modelVersion": "m-v2",
                "time": "2026-01-01T03:00:00Z",
                "message": "errors",
            }
        },
    }
    run = {
        "metadata": {"name": "svc-retrain-1", "creationTimestamp": "2026-01-01T01:00:00Z"},
        "spec": {"trigger": {"inferenceService": "svc", "signal": "manual"}},
        "status": {},
    }
    ev = {
        "involvedObject": {"kind": "InferenceService", "name": "svc"},
        "reason": "Other",
        "lastTimestamp": "2026-01-01T02:00:00Z",
        "message": "x",
    }
    other = {**ev, "involvedObject": {"kind": "InferenceService", "name": "not-this-one"}}
    kinds = [(e.kind, e.time[11:13]) for e in views.timeline(isvc, [run], [ev, other])]
    assert kinds == [("rollback", "03"), ("event", "02"), ("trigger", "01")]


def test_drift_reads_the_serving_runtimes_own_document() -> None:
    report = DriftReport(
        features=(
            FeatureDrift("petal", "numeric", "ks", 200, 0.4, 0.001, True),
            FeatureDrift("sepal", "numeric", "ks", 200, 0.01, 0.6, False),
        ),
        window_count=200,
        window_size=200,
        enough_data=True,
        share_drifted=0.5,
        dataset_drift=True,
        flag_by="test",
        psi_threshold=0.1,
        p_value_threshold=0.05,
        dataset_drift_share=0.5,
        min_rows=50,
    )
    d = views.pod_drift("p", "stable", report.to_dict())
    assert [(f.feature, f.drifted, f.psi) for f in d.features] == [
        ("petal", True, 0.4),
        ("sepal", False, 0.01),
    ]
    assert "dataset drift, 50% of features drifted" in render.drift_fragment([d], None)


def test_every_value_is_escaped() -> None:
    html = render.models_page(
        views.models([{**mv(1, 0.5), "spec": {"model": "<script>", "version": 1}}])
    )
    assert "<script>" not in html and "&lt;script&gt;" in html
