"""A scikit-learn model on KServe's Python model server (the documented custom-model route).

KServe's sklearnserver is not on PyPI; this is the equivalent a KServe user writes: a
``kserve.Model`` that loads the joblib file and predicts with numpy, served by
``kserve.ModelServer``. Run with the KServe venv's Python (see bench/setup_peers.sh).
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import kserve
import numpy as np
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

    def predict(self, payload: Any, headers: Any = None) -> Any:
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy()
            result = self.model.predict(x)
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
    args = p.parse_args()
    model = SklearnModel(args.name, args.model)
    kserve.ModelServer(
        http_port=args.port,
        workers=1,
        enable_grpc=False,
        enable_latency_logging=False,
    ).start([model])


if __name__ == "__main__":
    main()
