"""Build small, real ModelVersions from scikit-learn's bundled datasets.

For tests, the serving benchmark and trying the server on a laptop: trains an estimator
on iris / wine / breast_cancer / diabetes (bundled, no download), writes the artifact
(skops, or joblib), an ONNX graph when its predictions match scikit-learn's on the
held-out rows, reference statistics for drift, and a ModelVersion manifest, exactly as
the trainer records them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kubeloop_runtime import api, artifacts

Dataset = Literal["iris", "wine", "breast_cancer", "diabetes"]


@dataclass(frozen=True)
class BuiltModel:
    manifest: Path  # ModelVersion manifest (JSON)
    document: dict[str, Any]  # the same, as a dict
    spec: api.ModelVersionSpec
    estimator: Any
    x_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str]
    directory: Path


def build_model_version(
    out_dir: Path,
    *,
    dataset: Dataset = "iris",
    estimator: str = "LogisticRegression",
    hyperparameters: dict[str, Any] | None = None,
    fmt: Literal["skops", "joblib"] = "skops",
    onnx: bool = True,
    reference: bool = True,
    name: str | None = None,
    version: int = 1,
    seed: int = 0,
    frame: bool = True,
    also_joblib: bool = False,
) -> BuiltModel:
    """Train, save and describe one model version under ``out_dir``."""
    import pandas as pd  # noqa: PLC0415
    from sklearn import datasets  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    loader = getattr(datasets, f"load_{dataset}")
    bunch = loader(as_frame=True)
    table: pd.DataFrame = bunch.frame
    target = "target"
    features = [c for c in table.columns if c != target]
    dotted, task = api.ESTIMATORS[estimator]
    module, _, cls_name = dotted.rpartition(".")
    import importlib  # noqa: PLC0415

    cls = getattr(importlib.import_module(module), cls_name)
    params = dict(hyperparameters or {})
    if "random_state" in cls().get_params():
        params.setdefault("random_state", seed)
    if estimator == "LogisticRegression":
        params.setdefault("max_iter", 1000)
    model = cls(**params)
    x = table[features]
    y = table[target]
    x_train, x_test, y_train, y_test = train_test_split(
        x,
        y,
        test_size=0.2,
        random_state=seed,
        stratify=y if task is api.Task.CLASSIFICATION else None,
    )
    # The trainer fits on a DataFrame (feature names); ``frame=False`` fits on a plain
    # array, which model servers that feed numpy arrays expect (the benchmark's peers).
    fit_x = x_train if frame else x_train.to_numpy(dtype=np.float64)
    model.fit(fit_x, y_train.to_numpy())

    if fmt == "skops":
        import skops.io as sio  # noqa: PLC0415

        path = out_dir / "model.skops"
        sio.dump(model, path)
    else:
        import joblib  # noqa: PLC0415

        path = out_dir / "model.joblib"
        joblib.dump(model, path)

    if also_joblib and fmt != "joblib":
        import joblib  # noqa: PLC0415

        joblib.dump(model, out_dir / "model.joblib")
    artifact: dict[str, Any] = {
        "uri": path.resolve().as_uri(),
        "sha256": artifacts.sha256_file(path),
        "format": fmt,
        "sizeBytes": path.stat().st_size,
    }
    x_test_np = x_test.to_numpy(dtype=np.float64)
    if onnx:
        check = x_test if frame else x_test_np  # what scikit-learn was fitted on
        onnx_path = _export_onnx(model, len(features), out_dir, x_test_np, check, task=task)
        if onnx_path is not None:
            artifact["onnxUri"] = onnx_path.resolve().as_uri()
            artifact["onnxSha256"] = artifacts.sha256_file(onnx_path)
    if reference:
        from kubeloop_runtime import drift  # noqa: PLC0415

        ref = drift.build_reference(x_train, [])  # a frame: the reference names features
        ref_path = out_dir / "reference.json"
        ref_path.write_bytes(ref.to_json())
        artifact["referenceStatsUri"] = ref_path.resolve().as_uri()
        artifact["referenceStatsSha256"] = artifacts.sha256_file(ref_path)

    is_clf = task is api.Task.CLASSIFICATION
    classes = [c.item() for c in model.classes_] if is_clf else None
    spec_doc: dict[str, Any] = {
        "model": name or f"{dataset.replace('_', '-')}-{estimator.lower()}"[:40].rstrip("-"),
        "version": version,
        "task": task.value,
        "artifact": artifact,
        "framework": artifacts.running_framework().wire(),
        "signature": {
            "inputs": [{"name": f, "dtype": "float64"} for f in features],
            "output": {
                "name": "predict",
                "dtype": "int64" if is_clf else "float64",
                **({"classes": classes} if classes is not None else {}),
            },
        },
        "metrics": {},
        "dataset": {
            "sha256": "0" * 64,
            "rows": len(table),
            "columns": len(table.columns),
            "source": f"builtin:{dataset}",
        },
    }
    spec = api.ModelVersionSpec.model_validate(spec_doc)
    doc = {
        "apiVersion": api.API_VERSION,
        "kind": "ModelVersion",
        "metadata": {"name": f"{spec.model}-v{version}"},
        "spec": spec.wire(),
    }
    manifest = out_dir / "modelversion.json"
    manifest.write_text(json.dumps(doc, indent=2))
    return BuiltModel(
        manifest=manifest,
        document=doc,
        spec=spec,
        estimator=model,
        x_test=x_test_np,
        y_test=y_test.to_numpy(),
        feature_names=features,
        directory=out_dir,
    )


def _export_onnx(
    model: Any, n_features: int, out_dir: Path, x_test: np.ndarray, check: Any, *, task: api.Task
) -> Path | None:
    """Export to ONNX; keep the graph only if it predicts what scikit-learn predicts."""
    import onnxruntime as ort  # noqa: PLC0415
    from skl2onnx import to_onnx  # noqa: PLC0415
    from skl2onnx.common.data_types import DoubleTensorType  # noqa: PLC0415

    options = {id(model): {"zipmap": False}} if task is api.Task.CLASSIFICATION else None
    onx = to_onnx(
        model,
        initial_types=[("X", DoubleTensorType([None, n_features]))],
        options=options,
        target_opset=17,
    )
    path = out_dir / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = np.asarray(sess.run(None, {"X": x_test})[0]).reshape(-1)
    expected = model.predict(check)
    if task is api.Task.CLASSIFICATION:
        ok = bool(np.array_equal(got, expected))
    else:
        ok = bool(np.allclose(got, expected, rtol=1e-6, atol=1e-6))
    if not ok:
        path.unlink()
        return None
    return path
