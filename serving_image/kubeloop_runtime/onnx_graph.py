"""Feed an ONNX graph exported by the trainer; shared by the trainer (to verify the graph
exactly as the server will use it) and the server (to predict with it).

skl2onnx renames inputs whose names are not identifiers (``sepal length (cm)`` becomes
``sepal_length__cm_``), so graph input names are not feature names. The trainer records
which feature each graph input carries in the graph's metadata (:data:`INPUTS_KEY`, a JSON
list in graph input order) and checks, before it keeps the graph, that this predictor
reproduces scikit-learn on the held-out rows. Graphs written before the key existed are
matched by name, exactly or after the same renaming.

Rows arrive as the server validates them: ``[N, F]`` in signature order, float64 when every
feature is numeric (NaN for a missing value), else object (Python values, NaN for missing).
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from kubeloop_runtime import api

INPUTS_KEY = "kubeloop.inputs"

# ONNX tensor types -> the numpy dtype a feed of that type is built with.
_ONNX_NP_TYPES: dict[str, type] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(string)": object,
    "tensor(bool)": np.bool_,
}
_NOT_IDENTIFIER = re.compile(r"[^A-Za-z0-9_]")


def identifier(name: str) -> str:
    """A feature name as skl2onnx names the graph input for it (non-identifier chars -> _)."""
    return _NOT_IDENTIFIER.sub("_", name)


def input_features(
    graph_inputs: list[str], features: list[str], recorded: list[str] | None
) -> list[int]:
    """For each graph input (in graph order), the index of the feature it carries.

    ``recorded`` is the trainer's :data:`INPUTS_KEY` list; without it, names must match
    the features exactly or as :func:`identifier` renames them. Raises ``ValueError``.
    """
    index = {n: k for k, n in enumerate(features)}
    if recorded is not None:
        if len(recorded) != len(graph_inputs) or sorted(recorded) != sorted(features):
            raise ValueError(
                f"the graph's {INPUTS_KEY} {recorded} does not list the signature's features"
                f" {features} once each for its {len(graph_inputs)} inputs"
            )
        return [index[n] for n in recorded]
    if sorted(graph_inputs) == sorted(features):
        return [index[n] for n in graph_inputs]
    renamed = {identifier(n): k for k, n in enumerate(features)}
    if len(renamed) == len(features) and sorted(graph_inputs) == sorted(renamed):
        return [renamed[n] for n in graph_inputs]
    raise ValueError(
        f"ONNX inputs {graph_inputs} match neither one [N, {len(features)}] tensor nor the"
        f" signature's features {features}"
    )


def _last_dim(shape: Any) -> int | None:
    if isinstance(shape, list | tuple) and len(shape) == 2:
        d = shape[1]
        return d if isinstance(d, int) else None
    return -1  # anything else: not a plain [N, F] matrix


class OnnxPredictor:
    """An ONNX Runtime session fed one ``[N, F]`` tensor or one ``[N, 1]`` input per feature."""

    def __init__(self, model: bytes | str, signature: api.Signature, task: api.Task) -> None:
        import onnxruntime as ort  # noqa: PLC0415 - heavy, only when an ONNX graph exists

        opts = ort.SessionOptions()
        # One worker process serves many small requests: intra-op threads only add overhead.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(
            model, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        inputs = self.session.get_inputs()
        names = [f.name for f in signature.inputs]
        self.single = False
        self.single_type: type | None = None
        self.columns: list[tuple[str, int, type]] = []
        meta = self.session.get_modelmeta().custom_metadata_map
        recorded: list[str] | None = None
        if INPUTS_KEY in meta:
            loaded = json.loads(meta[INPUTS_KEY])
            if not isinstance(loaded, list) or not all(isinstance(n, str) for n in loaded):
                raise ValueError(f"the graph's {INPUTS_KEY} is not a list of feature names")
            recorded = loaded
        if (
            recorded is None
            and len(inputs) == 1
            and len(names) >= 1
            and _last_dim(inputs[0].shape) in (len(names), None)
            and inputs[0].name not in names
        ):
            self.single = True
            self.input_name = inputs[0].name
            self.single_type = _ONNX_NP_TYPES.get(inputs[0].type)
            if self.single_type is None or self.single_type is object:
                raise ValueError(f"unsupported ONNX input type {inputs[0].type}")
        else:
            order = input_features([i.name for i in inputs], names, recorded)
            for i, k in zip(inputs, order, strict=True):
                t = _ONNX_NP_TYPES.get(i.type)
                if t is None:
                    raise ValueError(f"unsupported ONNX input type {i.type} for {i.name!r}")
                self.columns.append((i.name, k, t))
        outs = self.session.get_outputs()
        self.classifier = task is api.Task.CLASSIFICATION
        self.label_name = outs[0].name
        self.proba_name = outs[1].name if self.classifier and len(outs) > 1 else None
        if self.classifier and self.proba_name is None:
            raise ValueError("ONNX classifier graph has no probabilities output")
        # Classifiers always fetch probabilities: they show when a float32 computation
        # overflowed (non-finite), which the server must never answer with a label.
        self._wanted = [self.label_name] + ([self.proba_name] if self.proba_name else [])

    def feed(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self.single:
            return {self.input_name: np.ascontiguousarray(x, dtype=self.single_type)}
        feed: dict[str, np.ndarray] = {}
        for name, k, t in self.columns:
            col = x[:, k]
            col = np.array([str(v) for v in col], dtype=object) if t is object else col.astype(t)
            feed[name] = col.reshape(-1, 1)
        return feed

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Labels (or values) ``[N]`` and, for classifiers, probabilities ``[N, C]``."""
        out = self.session.run(self._wanted, self.feed(x))
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


def server_rows(frame: Any) -> np.ndarray:
    """A feature frame as the server's validated rows: float64 if all numeric, else object."""
    import pandas as pd  # noqa: PLC0415

    if all(pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])
           for c in frame.columns):  # fmt: skip
        return np.asarray(frame.to_numpy(dtype=np.float64, na_value=np.nan))
    values = frame.astype(object).where(frame.notna(), np.nan)
    return np.asarray(values.to_numpy(dtype=object))
