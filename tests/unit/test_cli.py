"""kubectl kubeloop: the pure formatting and argument parsing."""

from __future__ import annotations

from typing import Any

import pytest

from kubeloop import cli
from kubeloop_runtime import api


def mv(version: int, *, aliases: list[str] | None = None, trigger: dict[str, Any] | None = None,
       passed: bool = True, model: str = "iris") -> dict[str, Any]:  # fmt: skip
    return {
        "metadata": {
            "name": f"{model}-v{version}",
            "creationTimestamp": f"2024-05-0{version}T00:00:00Z",
        },
        "spec": {
            "model": model,
            "version": version,
            "metrics": {"accuracy": 0.9 + version / 100, "f1": 0.8, "champion_accuracy": 0.5},
            "dataset": {
                "sha256": "ab" * 32,
                "source": f"configmap:data-{version}/iris.csv",
                "rows": 150,
                "columns": 5,
            },
            "lineage": {
                "trainingJob": f"tj-{version}",
                **({"trigger": trigger} if trigger else {}),
            },
            "gate": {"passed": passed, "message": "ok"},
        },
        "status": {"aliases": aliases or [], "conditions": [{"type": "Ready", "status": "True"}]},
    }


def test_history_rows_newest_first_with_lineage() -> None:
    trig = {"inferenceService": "iris-svc", "signal": "drift", "value": "0.75", "time": "t"}
    rows = cli.history_rows(
        [
            mv(1, aliases=["production"]),
            mv(3, passed=False),
            mv(2, trigger=trig),
            mv(9, model="other"),
        ],
        "iris",
    )
    assert [r[0] for r in rows] == ["iris-v3", "iris-v2", "iris-v1"]
    v3, v2, v1 = rows
    assert v1[2] == "production" and v2[2] == "-"
    assert v3[3] == "GateFailed" and v1[3] == "True"
    assert v2[4] == "accuracy=0.92 f1=0.8 champion_accuracy=0.5"
    assert v2[5] == "tj-2"
    assert v2[6] == "drift=0.75@iris-svc" and v1[6] == "-"
    assert v2[7] == "abababababab configmap:data-2/iris.csv"


def test_table_aligns_columns() -> None:
    text = cli.table(["A", "BB"], [["xxx", "y"], ["z", "wwww"]])
    assert text.splitlines() == ["A     BB", "xxx   y", "z     wwww"]


def test_lineage_text() -> None:
    trig = {
        "inferenceService": "iris-svc",
        "signal": "drift",
        "value": "0.75",
        "time": "2024-05-02T00:00:00Z",
    }
    isvc = {
        "metadata": {"name": "iris-svc"},
        "spec": {"model": {"model": "iris", "alias": "production"}},
        "status": {
            "servingVersion": "iris-v2",
            "lastRetrain": {"trainingJob": "tj-2", "signal": "drift", "value": "0.75", "time": "x"},
        },
    }
    tj = {
        "metadata": {"name": "tj-2"},
        "spec": {"estimator": {"type": "SVC"}, "champion": "iris-v1"},
        "status": {"completionTime": "c", "reason": "Trained"},
    }
    text = cli.lineage_text(isvc, mv(2, aliases=["production"], trigger=trig), tj)
    lines = text.splitlines()
    assert lines[0] == "InferenceService iris-svc (alias iris@production)"
    assert "  serving:      iris-v2" in lines
    assert "  trained by:   TrainingJob tj-2" in lines
    assert "  trigger:      drift=0.75@iris-svc" in lines
    assert any(
        line.startswith("  dataset:      configmap:data-2/iris.csv sha256=abab") for line in lines
    )
    assert "  champion:     iris-v1" in lines
    assert "ModelVersion -: not found" in cli.lineage_text({"metadata": {"name": "x"}}, None, None)


def test_retrain_patch() -> None:
    assert cli.retrain_patch("now") == {
        "metadata": {"annotations": {api.ANNOTATION_RETRAIN: "now"}}
    }


def test_canary_owner() -> None:
    assert cli._canary(
        {"spec": {"canary": {"modelVersion": "a"}}, "status": {"loopCanary": {"modelVersion": "b"}}}
    ) == ("a", False)
    assert cli._canary({"spec": {}, "status": {"loopCanary": {"modelVersion": "b"}}}) == ("b", True)
    with pytest.raises(cli.CliError, match="runs no canary"):
        cli._canary({"metadata": {"name": "x"}, "spec": {}, "status": {}})


@pytest.mark.parametrize(
    ("argv", "command", "ns"),
    [
        (["history", "iris", "-n", "ml"], "history", "ml"),
        (["-n", "ml", "retrain", "svc"], "retrain", "ml"),
        (["promote", "svc"], "promote", None),
    ],
)
def test_parser(argv: list[str], command: str, ns: str | None) -> None:
    args = cli.build_parser().parse_args(argv)
    assert args.command == command and args.namespace == ns
