"""Load one ModelVersion and predict with it. No HTTP here.

Loading order (any failure is a :class:`StartupError` and the server does not start):

1. the library versions recorded in the ModelVersion must match this image's;
2. the artifact's sha256 must match (checked by ``artifacts.load_model`` before it reads
   the file), then it is loaded with skops' type allowlist (a joblib pickle only with
   ``allow_pickle``);
3. when an ONNX graph is recorded, its sha256 must match too; it is then the fast
   predictor (``onnx_graph.OnnxPredictor``, the same code the trainer verified the graph
   with on held-out data). If the server cannot use a recorded graph it refuses to start
   rather than silently serving with the slower scikit-learn estimator (``--no-onnx``
   chooses scikit-learn explicitly).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from kubeloop_runtime import api, artifacts, storage
from kubeloop_runtime.onnx_graph import OnnxPredictor
from kubeloop_runtime.serve.errors import StartupError

log = logging.getLogger(__name__)

Runtime = Literal["onnx", "sklearn"]

# Signature dtypes -> numpy dtype used when a frame is built for scikit-learn.
_NUMERIC = frozenset({"float64", "int64"})


@dataclass(frozen=True, slots=True)
class Prediction:
    """Model output for N rows: labels or values ``[N]`` and, if asked, ``proba [N, C]``.

    ``bad`` marks rows whose output is not finite (a value, or any probability): they must
    never be answered. ``None`` when every row is finite (the usual case, nothing to slice).
    """

    labels: np.ndarray
    proba: np.ndarray | None = None
    bad: np.ndarray | None = None


class ServedModel:
    """One loaded ModelVersion: the estimator, maybe an ONNX graph, and its signature."""

    def __init__(
        self,
        spec: api.ModelVersionSpec,
        estimator: Any,
        onnx: OnnxPredictor | None = None,
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
        self._float_labels = not self.is_classifier or self._label_kind == "float64"
        self.imputed: frozenset[str] = imputed_features(estimator)

    # ------------------------------------------------------------------ predict (sync)
    def predict(self, x: np.ndarray, proba: bool = False) -> Prediction:
        """Predict for validated rows ``x`` ([N, F]; float64, or object if not all numeric)."""
        p: np.ndarray | None
        if self.onnx is not None:
            labels, p = self.onnx.predict(x)
        else:
            data = self._sklearn_input(x)
            labels = np.asarray(self.estimator.predict(data)).reshape(-1)
            p = (
                np.asarray(self.estimator.predict_proba(data), dtype=np.float64)
                if proba and self.is_classifier
                else None
            )
        bad: np.ndarray | None = None
        if self._float_labels and labels.dtype.kind == "f":
            finite = np.isfinite(labels)
            if p is not None:
                finite &= np.isfinite(p).all(axis=1)
            if not finite.all():
                bad = ~finite
        elif p is not None:
            finite = np.isfinite(p).all(axis=1)
            if not finite.all():
                bad = ~finite
        return Prediction(labels=labels, proba=p if proba else None, bad=bad)

    def _sklearn_input(self, x: np.ndarray) -> Any:
        if not self._frame and self.numeric:
            return x
        import pandas as pd  # noqa: PLC0415

        frame = pd.DataFrame(x, columns=self.feature_names)
        if not self.numeric or x.dtype == object:
            types: dict[str, str] = {}
            for n, d in zip(self.feature_names, self.feature_dtypes, strict=True):
                if d == "string":
                    types[n] = "object"
                elif d == "int64" and n in self.imputed and frame[n].isna().any():
                    types[n] = "float64"  # a missing value (null) in an integer column
                else:
                    types[n] = d
            frame = frame.astype(types)
        elif any(d == "int64" for d in self.feature_dtypes):
            frame = frame.astype(
                {
                    n: "int64"
                    for n, d in zip(self.feature_names, self.feature_dtypes, strict=True)
                    if d == "int64" and not (n in self.imputed and frame[n].isna().any())
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


def imputed_features(estimator: Any) -> frozenset[str]:
    """Features whose missing values the pipeline fills: those a ``SimpleImputer`` reads.

    The trainer's Pipeline is ``ColumnTransformer`` ("preprocess") then the estimator; a
    column goes through an imputer when ``impute.numeric`` / ``impute.categorical`` is not
    ``none``. Anything else (a bare estimator) imputes nothing.
    """
    from sklearn.impute import SimpleImputer  # noqa: PLC0415 - scikit-learn is loaded anyway

    steps = getattr(estimator, "named_steps", None)
    pre = steps.get("preprocess") if isinstance(steps, dict) else None
    fitted = getattr(pre, "transformers_", None)
    if not fitted:
        return frozenset()
    out: set[str] = set()
    for _name, transformer, columns in fitted:
        inner = getattr(transformer, "steps", None)
        parts = [t for _, t in inner] if inner is not None else [transformer]
        if any(isinstance(t, SimpleImputer) for t in parts) and isinstance(columns, list):
            out.update(str(c) for c in columns)
    return frozenset(out)


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
        raise StartupError(
            f"{where}: spec.framework: library version mismatch: {e}", "LibraryVersionMismatch"
        ) from e
    path = _resolve(spec.artifact.uri, artifact_root, where, "spec.artifact.uri")
    fmt = spec.artifact.format
    if fmt == "joblib" and not allow_pickle:
        raise StartupError(
            f"{where}: the artifact is a joblib pickle, which runs code when loaded;"
            " start with --allow-pickle to accept it",
            "ArtifactRefused",
        )
    t0 = time.perf_counter()
    try:
        estimator = artifacts.load_model(
            path, sha256=spec.artifact.sha256, fmt=fmt, allow_pickle=allow_pickle
        )
    except artifacts.ArtifactIntegrityError as e:
        raise StartupError(
            f"{where}: spec.artifact.sha256: artifact integrity check failed: {e}",
            INTEGRITY_FAILED,
        ) from e
    except artifacts.UnsafeArtifactError as e:
        raise StartupError(f"{where}: artifact refused as unsafe: {e}", "ArtifactRefused") from e
    log.info(
        "Loaded %s from %s (%s, sha256 %s) in %.2fs",
        where,
        path,
        fmt,
        spec.artifact.sha256[:12],
        time.perf_counter() - t0,
    )
    onnx: OnnxPredictor | None = None
    if use_onnx and spec.artifact.onnx_uri:
        onnx = _load_onnx(spec, artifact_root, where)
    return ServedModel(spec, estimator, onnx)


# The reason of a refusal when a file is not the one recorded at training.
INTEGRITY_FAILED = "ArtifactIntegrityFailed"
NOT_FOUND = "ArtifactNotFound"  # a file:// or pvc:// artifact (an object store says its own)
# Where a ModelVersion's object-store credentials come from (named when access is denied).
CREDENTIALS_FIELD = "spec.artifact.storage.secretName"


def _resolve(uri: str, artifact_root: Path | None, where: str, field: str) -> Path:
    """The local file of ``uri`` (downloaded from an object store); a StartupError naming
    ``field`` and the cause (with the object store's reason) when it cannot be had."""
    try:
        path = artifacts.resolve(uri, artifact_root=artifact_root)
    except storage.StorageError as e:
        raise StartupError(f"{where}: {e.for_field(field, CREDENTIALS_FIELD)}", e.reason) from e
    except (artifacts.ArtifactError, OSError) as e:
        raise StartupError(
            f"{where}: {field}: cannot resolve {uri}: {e}", "ArtifactNotFound"
        ) from e
    if not path.is_file():
        raise StartupError(f"{where}: {field}: {uri} not found at {path}", NOT_FOUND)
    return path


def _load_onnx(spec: api.ModelVersionSpec, artifact_root: Path | None, where: str) -> OnnxPredictor:
    uri = spec.artifact.onnx_uri
    assert uri is not None
    if spec.artifact.onnx_sha256 is None:
        raise StartupError(
            f"{where}: ONNX graph {uri} is recorded without its sha256", INTEGRITY_FAILED
        )
    path = _resolve(uri, artifact_root, where, "spec.artifact.onnxUri")
    digest = artifacts.sha256_file(path)
    try:
        artifacts.verify_sha256(digest, spec.artifact.onnx_sha256, str(path))
    except artifacts.ArtifactIntegrityError as e:
        raise StartupError(
            f"{where}: spec.artifact.onnxSha256: ONNX graph integrity check failed: {e}",
            INTEGRITY_FAILED,
        ) from e
    try:
        predictor = OnnxPredictor(str(path), spec.signature, spec.task)
    except Exception as e:  # onnxruntime raises its own types
        # Never serve silently with the (much slower) scikit-learn estimator instead.
        raise StartupError(
            f"{where}: the recorded ONNX graph {uri} cannot be used ({e}); start with"
            " --no-onnx to serve it with scikit-learn"
        ) from e
    log.info("Loaded ONNX graph %s (sha256 %s)", path, digest[:12])
    return predictor
