"""Load one ModelVersion and predict with it. No HTTP here.

Loading order (any failure is a :class:`StartupError` and the server does not start):

1. the library versions recorded in the ModelVersion must match this image's;
2. the artifact's sha256 must match (checked by ``artifacts.load_model`` before it reads
   the file), then it is loaded with skops' type allowlist (a joblib pickle only with
   ``allow_pickle``);
3. when an ONNX graph is recorded, its sha256 must match too; it is then the fast
   predictor. The trainer writes it only when its predictions equal scikit-learn's on
   held-out data; if its inputs or outputs are not what this module understands, the
   server logs why and falls back to scikit-learn.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kubeloop_runtime import api, artifacts
from kubeloop_runtime.serve.errors import StartupError

log = logging.getLogger(__name__)

Runtime = Literal["onnx", "sklearn"]

# Signature dtypes -> numpy dtype used when a frame is built for scikit-learn.
_NUMERIC = frozenset({"float64", "int64"})


@dataclass(frozen=True, slots=True)
class Prediction:
    """Model output for N rows: labels or values ``[N]`` and, if asked, ``proba [N, C]``."""

    labels: np.ndarray
    proba: np.ndarray | None = None


class _OnnxPredictor:
    """Feed an ONNX graph exported by skl2onnx: one [N, F] tensor or one input per feature."""

    def __init__(self, path: Path, signature: api.Signature, task: api.Task) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - heavy, only when an ONNX graph exists

        opts = ort.SessionOptions()
        # One worker process serves many small requests: intra-op threads only add overhead.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()
        names = [f.name for f in signature.inputs]
        self.single: bool
        self.single_type: type | None = None
        self.columns: list[tuple[str, int, type]] = []
        if (
            len(inputs) == 1
            and len(names) >= 1
            and _last_dim(inputs[0].shape) in (len(names), None)
        ):
            self.single = True
            self.input_name = inputs[0].name
            self.single_type = _onnx_np_type(inputs[0].type)
            if self.single_type is None or self.single_type is object:
                raise ValueError(f"unsupported ONNX input type {inputs[0].type}")
        elif sorted(i.name for i in inputs) == sorted(names):
            self.single = False
            index = {n: k for k, n in enumerate(names)}
            for i in inputs:
                t = _onnx_np_type(i.type)
                if t is None:
                    raise ValueError(f"unsupported ONNX input type {i.type} for {i.name!r}")
                self.columns.append((i.name, index[i.name], t))
        else:
            raise ValueError(
                f"ONNX inputs {[i.name for i in inputs]} match neither one [N, {len(names)}]"
                " tensor nor the signature's feature names"
            )
        outs = self.session.get_outputs()
        self.task = task
        self.label_name = outs[0].name
        self.proba_name = (
            outs[1].name if task is api.Task.CLASSIFICATION and len(outs) > 1 else None
        )
        if task is api.Task.CLASSIFICATION and self.proba_name is None:
            raise ValueError("ONNX classifier graph has no probabilities output")

    def feed(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.single:
            return {self.input_name: np.ascontiguousarray(x, dtype=self.single_type)}
        feed: dict[str, np.ndarray] = {}
        for name, k, t in self.columns:
            col = x[:, k]
            col = np.array([str(v) for v in col], dtype=object) if t is object else col.astype(t)
            feed[name] = col.reshape(-1, 1)
        return feed

    def predict(self, x: np.ndarray, proba: bool) -> tuple[np.ndarray, np.ndarray | None]:
        wanted = [self.label_name]
        if proba and self.proba_name is not None:
            wanted.append(self.proba_name)
        out = self.session.run(wanted, self.feed(x))
        labels = np.asarray(out[0]).reshape(-1)
        p: np.ndarray | None = None
        if len(out) > 1:
            raw = out[1]
            if isinstance(raw, list):  # ZipMap: a list of {class: probability}
                keys = list(raw[0].keys()) if raw else []
                p = np.array([[row[k] for k in keys] for row in raw], dtype=np.float64)
            else:
                p = np.asarray(raw, dtype=np.float64)
        return labels, p


def _last_dim(shape: Any) -> int | None:
    if isinstance(shape, list | tuple) and len(shape) == 2:
        d = shape[1]
        return d if isinstance(d, int) else None
    return -1  # anything else: not a plain [N, F] matrix


# ONNX tensor types -> the numpy dtype a feed of that type is built with.
_ONNX_NP_TYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": object,
    "tensor(bool)": np.bool_,
}


def _onnx_np_type(t: str) -> type | None:
    return _ONNX_NP_TYPES.get(t)


class ServedModel:
    """One loaded ModelVersion: the estimator, maybe an ONNX graph, and its signature."""

    def __init__(
        self,
        spec: api.ModelVersionSpec,
        estimator: Any,
        onnx: _OnnxPredictor | None = None,
    ) -> None:
        self.spec = spec
        self.estimator = estimator
        self.onnx = onnx
        self.runtime: Runtime = "onnx" if onnx is not None else "sklearn"
        self.task = spec.task
        self.signature = spec.signature
        self.feature_names = [f.name for f in spec.signature.inputs]
        self.feature_dtypes = [f.dtype for f in spec.signature.inputs]
        self.numeric = all(d in _NUMERIC for d in self.feature_dtypes)
        self.is_classifier = spec.task is api.Task.CLASSIFICATION
        classes = getattr(estimator, "classes_", None)
        if self.is_classifier and classes is None:
            raise StartupError(f"model {spec.model} v{spec.version}: a classifier without classes_")
        self.classes: list[Any] = [_py(c) for c in classes] if classes is not None else []
        self._frame = getattr(estimator, "feature_names_in_", None) is not None
        self._label_kind = spec.signature.output.dtype

    # ------------------------------------------------------------------ predict (sync)
    def predict(self, x: np.ndarray, proba: bool = False) -> Prediction:
        """Predict for validated rows ``x`` ([N, F]; float64, or object if not all numeric)."""
        if self.onnx is not None:
            labels, p = self.onnx.predict(x, proba)
        else:
            data = self._sklearn_input(x)
            labels = np.asarray(self.estimator.predict(data)).reshape(-1)
            p = (
                np.asarray(self.estimator.predict_proba(data), dtype=np.float64)
                if proba and self.is_classifier
                else None
            )
        return Prediction(labels=labels, proba=p)

    def _sklearn_input(self, x: np.ndarray) -> Any:
        if not self._frame and self.numeric:
            return x
        import pandas as pd  # noqa: PLC0415

        frame = pd.DataFrame(x, columns=self.feature_names)
        if not self.numeric or x.dtype == object:
            frame = frame.astype(
                {
                    n: ("object" if d == "string" else d)
                    for n, d in zip(self.feature_names, self.feature_dtypes, strict=True)
                }
            )
        elif any(d == "int64" for d in self.feature_dtypes):
            frame = frame.astype(
                {
                    n: "int64"
                    for n, d in zip(self.feature_names, self.feature_dtypes, strict=True)
                    if d == "int64"
                }
            )
        return frame

    def labels_to_json(self, labels: np.ndarray) -> list[Any]:
        """Predicted labels as JSON values of the signature's output dtype."""
        kind = self._label_kind
        if kind == "string":
            return [str(v) for v in labels.tolist()]
        if kind == "int64":
            if labels.dtype.kind in "iu":
                return labels.tolist()  # type: ignore[no-any-return]
            return [int(v) for v in labels.tolist()]
        if kind == "bool":
            return [bool(v) for v in labels.tolist()]
        return labels.astype(np.float64, copy=False).tolist()  # type: ignore[no-any-return]


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


# --------------------------------------------------------------------------- loading


def load(
    spec: api.ModelVersionSpec,
    *,
    artifact_root: Path | None = None,
    allow_pickle: bool = False,
    use_onnx: bool = True,
) -> ServedModel:
    """Verify versions and checksums, then load the estimator (and the ONNX graph)."""
    where = f"ModelVersion {spec.model} v{spec.version}"
    try:
        artifacts.check_versions(spec.framework)
    except artifacts.VersionMismatchError as e:
        raise StartupError(f"{where}: library version mismatch: {e}") from e
    try:
        path = artifacts.resolve(spec.artifact.uri, artifact_root=artifact_root)
    except (artifacts.ArtifactError, OSError) as e:
        raise StartupError(f"{where}: cannot resolve artifact {spec.artifact.uri}: {e}") from e
    if not path.is_file():
        raise StartupError(f"{where}: artifact {spec.artifact.uri} not found at {path}")
    fmt = spec.artifact.format
    if fmt == "joblib" and not allow_pickle:
        raise StartupError(
            f"{where}: the artifact is a joblib pickle, which runs code when loaded;"
            " start with --allow-pickle to accept it"
        )
    t0 = time.perf_counter()
    try:
        estimator = artifacts.load_model(
            path, sha256=spec.artifact.sha256, fmt=fmt, allow_pickle=allow_pickle
        )
    except artifacts.ArtifactIntegrityError as e:
        raise StartupError(f"{where}: artifact integrity check failed: {e}") from e
    except artifacts.UnsafeArtifactError as e:
        raise StartupError(f"{where}: artifact refused as unsafe: {e}") from e
    log.info(
        "Loaded %s from %s (%s, sha256 %s) in %.2fs",
        where,
        path,
        fmt,
        spec.artifact.sha256[:12],
        time.perf_counter() - t0,
    )
    onnx: _OnnxPredictor | None = None
    if use_onnx and spec.artifact.onnx_uri:
        onnx = _load_onnx(spec, artifact_root, where)
    return ServedModel(spec, estimator, onnx)


def _load_onnx(
    spec: api.ModelVersionSpec, artifact_root: Path | None, where: str
) -> _OnnxPredictor | None:
    uri = spec.artifact.onnx_uri
    assert uri is not None
    if spec.artifact.onnx_sha256 is None:
        raise StartupError(f"{where}: ONNX graph {uri} is recorded without its sha256")
    try:
        path = artifacts.resolve(uri, artifact_root=artifact_root)
    except (artifacts.ArtifactError, OSError) as e:
        raise StartupError(f"{where}: cannot resolve ONNX graph {uri}: {e}") from e
    if not path.is_file():
        raise StartupError(f"{where}: ONNX graph {uri} not found at {path}")
    digest = artifacts.sha256_file(path)
    try:
        artifacts.verify_sha256(digest, spec.artifact.onnx_sha256, str(path))
    except artifacts.ArtifactIntegrityError as e:
        raise StartupError(f"{where}: ONNX graph integrity check failed: {e}") from e
    try:
        predictor = _OnnxPredictor(path, spec.signature, spec.task)
    except Exception as e:  # onnxruntime raises its own types; any failure means fall back
        log.warning("Not using ONNX graph %s (%s); serving with scikit-learn", path, e)
        return None
    log.info("Loaded ONNX graph %s (sha256 %s)", path, digest[:12])
    return predictor
