"""A scikit-learn model on KServe's Python model server (the documented custom-model route).

KServe's sklearnserver is not on PyPI; this is the equivalent a KServe user writes: a
``kserve.Model`` that loads the joblib file and predicts, served by ``kserve.ModelServer``.
The model is the Pipeline ``kubeloop-train`` fitted on a DataFrame, so (as a KServe user
must for such a model) the request's inputs become a DataFrame: one tensor per feature,
named by the feature, or one ``[N, F]`` tensor in the fitted column order. Run with the
KServe venv's Python (see bench/setup_peers.sh).
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import kserve
import numpy as np
import pandas as pd
from kserve import InferOutput, InferRequest, InferResponse


class SklearnModel(kserve.Model):  # type: ignore[misc]
    def __init__(self, name: str, path: str) -> None:
        super().__init__(name)
        self.path = path
        self.model: Any = None
        self.load()

    def load(self) -> bool:
        self.model = joblib.load(self.path)
        self.ready = True
        return self.ready

    def _frame(self, payload: InferRequest) -> Any:
        columns = list(getattr(self.model, "feature_names_in_", []))
        if len(payload.inputs) == 1 and columns:
            return pd.DataFrame(payload.inputs[0].as_numpy(), columns=columns)
        if len(payload.inputs) == 1:
            return payload.inputs[0].as_numpy()
        return pd.DataFrame({i.name: i.as_numpy().reshape(-1) for i in payload.inputs})

    def predict(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            result = self.model.predict(self._frame(payload))
            out = InferOutput(name="predict", shape=list(result.shape), datatype="INT64")
            out.set_data_from_numpy(np.asarray(result, dtype=np.int64), binary_data=False)
            return InferResponse(
                response_id=payload.id or "", model_name=self.name, infer_outputs=[out]
            )
        x = np.asarray(payload["instances"], dtype=np.float64)
        return {"predictions": self.model.predict(x).tolist()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--grpc-port", type=int, help="also serve KServe's gRPC (V2) on this port")
    args = p.parse_args()
    model = SklearnModel(args.name, args.model)
    kserve.ModelServer(
        http_port=args.port,
        grpc_port=args.grpc_port or 8081,
        workers=1,
        enable_grpc=args.grpc_port is not None,
        enable_latency_logging=False,
    ).start([model])


if __name__ == "__main__":
    main()
