"""``kubectl kubeloop ui`` in a real browser (Debian's chromium through Playwright) against the
local control plane: every page, live updates from watches, keyboard use, and a user whose
Role reads only ModelVersions. Writes the screenshots docs/ui.md shows (docs/images/ui/).

No operator runs: the objects (and their status, through the status subresource, and
Events) are written as the operator would have left them, so each page's content is known.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeloop.kube import Kube
from kubeloop_runtime import api
from tests.integration.harness import Cluster, OperatorProcess, wait_for
from tests.integration.test_dashboards_live import PROMETHEUS_CONFIG
from tests.integration.test_loop import FEATURE, ISVC, World, retraining_policy, rows
from tests.integration.ui_harness import (
    UIProcess,
    chromium,
    condition,
    create_with_status,
    inference_service,
    model_version,
    post_event,
    role_kubeconfig,
    training_job,
)
from tests.prometheus_runner import Prometheus

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "docs" / "images" / "ui"
TRIGGER = {
    "inferenceService": "iris-loop",
    "signal": "drift",
    "value": "0.31",
    "time": "2026-12-01T11:00:00Z",
}
SECRET_MESSAGE = "trained on 150 rows, secret-marker-42"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _mv_status(aliases: list[str], ready: bool = True) -> dict[str, Any]:
    return {
        "aliases": aliases,
        "conditions": [
            condition(
                api.COND_READY, "True" if ready else "False", "Verified" if ready else "GateFailed"
            )
        ],
    }


def _tj_status(mv: str, finished: str, message: str) -> dict[str, Any]:
    return {
        "conditions": [condition(api.COND_SUCCEEDED, "True", "Succeeded", message)],
        "completionTime": finished,
        "startTime": "2026-12-01T09:59:00Z",
        "modelVersion": mv,
        "gate": {"passed": True, "message": "accuracy 0.97 >= champion 0.95 - 0"},
    }


def seed(kube: Kube, ns: str) -> None:
    """A model with three versions, the run that replaced the second, and a served loop."""
    create_with_status(
        kube,
        training_job(ns, "iris-rf"),
        _tj_status("iris-v1", "2026-12-01T10:02:00Z", SECRET_MESSAGE),
    )
    create_with_status(
        kube,
        training_job(ns, "iris-loop-retrain-1", champion="iris-v2", trigger=TRIGGER),
        _tj_status("iris-v3", "2026-12-01T11:04:00Z", "registered iris-v3"),
    )
    create_with_status(
        kube, model_version(ns, "iris", 1, accuracy=0.91, training_job="iris-rf"), _mv_status([])
    )
    create_with_status(
        kube, model_version(ns, "iris", 2, accuracy=0.95, dataset_sha="e" * 64), _mv_status([])
    )
    create_with_status(
        kube,
        model_version(
            ns, "iris", 3, accuracy=0.97, training_job="iris-loop-retrain-1", trigger=TRIGGER
        ),
        _mv_status(["production"]),
    )
    create_with_status(
        kube,
        inference_service(ns, "iris-loop", "iris", "production"),
        {
            "servingVersion": "iris-v3",
            "traffic": [
                {
                    "modelVersion": "iris-v3",
                    "role": "stable",
                    "percent": 100,
                    "replicas": 2,
                    "readyReplicas": 2,
                }
            ],
            "conditions": [condition(api.COND_READY, "True", "Serving", "iris-v3 serves")],
            "lastRetrain": {
                "time": TRIGGER["time"],
                "trainingJob": "iris-loop-retrain-1",
                "signal": "drift",
                "value": "0.31",
            },
            "analysis": {
                "decision": "Promote",
                "modelVersion": "iris-v3",
                "message": "error rate 0.2% <= 5%, accuracy 0.97 >= 0.9",
                "time": "2026-12-01T11:20:00Z",
            },
        },
    )
    post_event(
        kube,
        ns,
        "InferenceService",
        "iris-loop",
        "RetrainingStarted",
        "drift share 0.5 >= 0.5; created TrainingJob iris-loop-retrain-1",
        "2026-12-01T11:00:01Z",
    )
    post_event(
        kube,
        ns,
        "InferenceService",
        "iris-loop",
        "Promoted",
        "Canary iris-v3 promoted to stable",
        "2026-12-01T11:20:00Z",
    )


def _shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_every_page_in_a_browser_and_live_updates(
    cluster: Cluster, kube: Kube, namespace: str, tmp_path: Path, browser: Any
) -> None:
    seed(kube, namespace)
    with UIProcess(cluster.kubeconfig, namespace, tmp_path) as ui:
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        # Models: one model, three versions, the alias.
        page.goto(ui.url)
        row = page.locator("main table tbody tr", has_text="iris")
        assert row.locator("td").nth(0).inner_text() == "3"
        assert "production" in row.inner_text() and "iris-v3" in row.inner_text()
        # Keyboard: the first Tab reaches the skip link, which moves focus to the content.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.textContent") == "Skip to content"
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.id") == "main"
        _shot(page, "models")

        # A model's versions side by side, and the chart of accuracy across them.
        page.goto(ui.url + "models/iris")
        names = page.locator("table.versions tbody th[scope=row]").all_inner_texts()
        assert names == ["iris-v3", "iris-v2", "iris-v1"]
        v2 = page.locator("tr#iris-v2").inner_text()
        assert "0.95" in v2 and "eeeeeeeeeeee" in v2 and "sklearn 1.6.1" in v2
        label = page.locator("figure.chart svg").get_attribute("aria-label") or ""
        assert "accuracy across 3 versions" in label and "highest 0.97 at v3" in label
        page.wait_for_selector("body[data-live='1']")
        _shot(page, "model")

        # Live: a new version appears, then the alias moves, without a reload.
        page.evaluate("window.__sameDocument = true")
        create_with_status(kube, model_version(namespace, "iris", 4, accuracy=0.98), _mv_status([]))
        page.wait_for_selector("tr#iris-v4", timeout=15000)
        kube.patch_status(api.API_VERSION, "ModelVersion", namespace, "iris-v3", {"aliases": []})
        kube.patch_status(
            api.API_VERSION, "ModelVersion", namespace, "iris-v4", {"aliases": ["production"]}
        )
        wait_for(
            lambda: "production" in page.locator("tr#iris-v4").inner_text(),
            timeout=15,
            what="the alias on iris-v4 in the page",
        )
        assert "production" not in page.locator("tr#iris-v3").inner_text()
        assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"

        # Compare two versions (checkboxes by keyboard: focus, Space).
        for name in ("iris-v2", "iris-v4"):
            page.locator(f"input[value={name}]").focus()
            page.keyboard.press("Space")
        page.get_by_role("button", name="Compare selected").click()
        page.wait_for_url("**/compare?**")
        headers = page.locator("table.compare thead th").all_inner_texts()
        assert headers == ["Field", "iris-v2", "iris-v4"]
        assert "differs" in page.locator("tr", has_text="Dataset sha256").inner_text()
        _shot(page, "compare")

        # A version's lineage: where v2 came from, and the run that replaced it, and why.
        page.goto(ui.url + "versions/iris-v2")
        replaced = page.locator("ol.lineage li", has_text="Replaced by").inner_text()
        assert "iris-v3 by run iris-loop-retrain-1" in replaced
        assert "drift=0.31 on iris-loop" in replaced
        page.goto(ui.url + "versions/iris-v3")
        lineage = page.locator("ol.lineage").inner_text()
        assert "iris-loop-retrain-1" in lineage and "drift" in lineage and "iris-v2" in lineage
        _shot(page, "lineage")

        # The service: traffic, the canary decision, the loop's timeline, drift.
        page.goto(ui.url + "services/iris-loop")
        assert "iris-v3" in page.locator("svg.traffic").get_attribute("aria-label")
        assert page.locator("strong.decision").inner_text() == "Promote"
        kinds = page.locator("ol.timeline li .kind").all_text_contents()
        for kind in ("trigger", "run", "gate", "promotion"):
            assert kind in kinds, kinds
        timeline = page.locator("ol.timeline").inner_text()
        assert "Retrain triggered: drift=0.31" in timeline
        assert "Canary analysis: Promote iris-v3" in timeline
        page.wait_for_selector("#drift[data-loaded='1']", timeout=15000)
        assert "No serving pods" in page.locator("#drift").inner_text()
        _shot(page, "service")

        # Live on the service page: a rollback decision appears on the timeline.
        kube.patch_status(
            api.API_VERSION,
            "InferenceService",
            namespace,
            "iris-loop",
            {
                "analysis": {
                    "decision": "Rollback",
                    "modelVersion": "iris-v4",
                    "message": "error rate 9% > 5%",
                    "time": "2026-12-02T08:00:00Z",
                }
            },
        )
        wait_for(
            lambda: page.locator("strong.decision").inner_text() == "Rollback",
            timeout=15,
            what="the rollback in the page",
        )
        assert page.locator("ol.timeline li.rollback").count() == 1
        page.close()


def test_a_user_who_may_read_only_modelversions_sees_nothing_else(
    cluster: Cluster, kube: Kube, namespace: str, tmp_path: Path, browser: Any
) -> None:
    seed(kube, namespace)
    rules = [
        {
            "apiGroups": [api.GROUP],
            "resources": [api.MODELVERSIONS],
            "verbs": ["get", "list", "watch"],
        }
    ]
    kubeconfig = role_kubeconfig(cluster, namespace, "mv-reader", rules, tmp_path / "kubeconfig")
    with UIProcess(kubeconfig, namespace, tmp_path) as ui:
        page = browser.new_page()
        page.goto(ui.url + "models/iris")
        assert page.locator("table.versions tbody tr").count() == 3
        page.goto(ui.url + "services")
        denied = page.locator("[data-denied]")
        assert denied.get_attribute("data-denied") == "InferenceServices"
        assert "not permitted" in denied.inner_text()
        assert "iris-loop" not in page.content()
        page.goto(ui.url + "services/iris-loop")
        assert page.locator("[data-denied]").count() == 1
        assert "Promote" not in page.content()
        page.goto(ui.url + "versions/iris-v1")
        assert "not permitted to read TrainingJobs" in page.locator("ol.lineage").inner_text()
        assert SECRET_MESSAGE not in page.content()
        page.close()


def test_drift_per_feature_from_prometheus_scraping_the_real_servers(
    cluster: Cluster,
    kube: Kube,
    namespace: str,
    artifacts_pvc: str,
    kubelet: Any,
    operator: OperatorProcess,
    tmp_path: Path,
    browser: Any,
) -> None:
    """``--prometheus``: the drift section reads the drift series a real Prometheus scraped
    (with the shipped relabel rules) from the real kubeloop-serve processes behind the pods;
    the one feature the traffic shifted is shown drifted, the others not. (The pods'
    own reports come through the API server's pod proxy, which refuses the kwok tier's
    loopback pod addresses: test_real_node.py checks that path on real pods.)"""
    w = World(kube, namespace, kubelet, operator)
    w.shifted_dataset()
    w.train_v1()
    w.serve(retraining_policy(triggers={"drift": False}))
    # A full window (60 rows) on every pod: iris spread evenly over its three classes (the
    # file is sorted by class), with petal length shifted by 2 std.
    shifted = rows(2.0)
    window = [shifted[i * len(shifted) // 60] for i in range(60)]
    for ip in w.pod_ips("stable"):
        assert len(w.predict(ip, window)) == 60

    pods = [
        p
        for p in kube.list("v1", "Pod", namespace, labels={api.LABEL_INFERENCESERVICE: ISVC})
        if (p.get("status") or {}).get("podIP")
    ]
    prom = Prometheus.from_cluster_config(tmp_path / "prometheus", PROMETHEUS_CONFIG)
    with prom:
        prom.discover(pods)
        prom.wait_for_targets(
            lambda ts: len([t for t in ts if t["labels"]["job"] == "kubeloop-predictors"]) == 3,
            what="the three predictor pods",
        )
        prom.wait_for_scrapes(2)
        extra = ["--prometheus", prom.url]
        with UIProcess(cluster.kubeconfig, namespace, tmp_path / "ui-prom", extra=extra) as ui:
            page = browser.new_page()
            page.goto(ui.url + f"services/{ISVC}")
            page.wait_for_selector("#drift[data-loaded='1']", timeout=15000)
            from_prom = page.locator("#drift table.drift", has_text="From Prometheus")
            assert from_prom.count() == 1, page.locator("#drift").inner_text()
            drifted = from_prom.locator("tr.drifted th[scope=row]").all_inner_texts()
            assert drifted == [FEATURE], from_prom.inner_text()
            page.close()
