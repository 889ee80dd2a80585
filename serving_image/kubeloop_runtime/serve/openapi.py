"""The OpenAPI 3.0 document of the server (``GET /openapi.json``), written by hand.

It describes every endpoint with request schemas precise enough for property-based API
testing (schemathesis): model names, feature names, datatypes and output names are
enumerated from the served ModelVersion.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubeloop_runtime.serve.protocol import V2_DATATYPES

if TYPE_CHECKING:
    from kubeloop_runtime.serve.dataplane import DataPlane
    from kubeloop_runtime.serve.settings import ServeSettings

_ERR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"description": description}
    if schema is not None:
        r["content"] = {"application/json": {"schema": schema}}
    return r


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Invalid input (names the field)",
        404: "Unknown model or version",
        405: "Method not allowed",
        413: "Body too large",
        415: "Content type is not JSON",
        503: "Not ready",
    }
    return {str(c): _resp(text[c], _ERR) for c in codes}


def _json_body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}


def openapi_document(settings: ServeSettings, dataplane: DataPlane) -> dict[str, Any]:
    name = settings.served_name
    version = settings.version
    sig = dataplane.model.signature
    features = [f.name for f in sig.inputs]
    scalar = {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]}
    name_param = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [name]},
        "description": "The served model name",
    }
    version_param = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": [version]},
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Tensor": {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "example": "input-0"},
                "shape": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0},
                    "minItems": 1,
                    "maxItems": 2,
                },
                "datatype": {"type": "string", "enum": list(V2_DATATYPES)},
                "data": {
                    "type": "array",
                    "items": {"oneOf": [scalar, {"type": "array", "items": scalar}]},
                },
                "parameters": {"type": "object"},
            },
        },
        "InferenceRequest": {
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 128},
                "parameters": {
                    "type": "object",
                    "properties": {"probabilities": {"type": "boolean"}},
                },
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"$ref": "#/components/schemas/Tensor"},
                    "description": (
                        f"One [N, {len(features)}] tensor, or one [N] tensor per feature"
                        f" named {', '.join(features)}"
                    ),
                },
                "outputs": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "enum": ["predict", "predict_proba"]}
                        },
                    },
                },
            },
        },
        "InferenceResponse": {
            "type": "object",
            "required": ["model_name", "id", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/Tensor"}},
            },
        },
        "V1Request": {
            "type": "object",
            "required": ["instances"],
            "additionalProperties": False,
            "properties": {
                "instances": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "oneOf": [
                            {
                                "type": "array",
                                "items": scalar,
                                "minItems": len(features),
                                "maxItems": len(features),
                            },
                            {
                                "type": "object",
                                "required": features,
                                "properties": {f: scalar for f in features},
                                "additionalProperties": False,
                            },
                        ]
                    },
                },
                "probabilities": {"type": "boolean"},
                "id": {"type": "string", "minLength": 1, "maxLength": 128},
            },
        },
        "V1Response": {
            "type": "object",
            "required": ["predictions", "id"],
            "properties": {
                "predictions": {"type": "array"},
                "probabilities": {"type": "array", "items": {"type": "array"}},
                "id": {"type": "string"},
            },
        },
        "Feedback": {
            "type": "object",
            "required": ["id", "labels"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string", "minLength": 1, "maxLength": 128},
                "labels": {"type": "array", "minItems": 1, "items": scalar},
            },
        },
        "Object": {"type": "object"},
    }
    obj = {"$ref": "#/components/schemas/Object"}

    def get(
        summary: str, schema: dict[str, Any], *errs: int, params: list[Any] | None = None
    ) -> dict[str, Any]:
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": _resp("OK", schema), **_errors(*errs)},
        }
        if params:
            op["parameters"] = params
        return {"get": op}

    def post(summary: str, body: str, schema: dict[str, Any], params: list[Any]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "parameters": params,
                "requestBody": _json_body(body),
                "responses": {"200": _resp("OK", schema), **_errors(400, 404, 413, 415)},
            }
        }

    infer_resp = {"$ref": "#/components/schemas/InferenceResponse"}
    paths: dict[str, Any] = {
        "/v2/health/live": get("Liveness", obj),
        "/v2/health/ready": get("Readiness", obj, 503),
        "/v2": get("Server metadata", obj),
        "/v2/models/{name}": get("Model metadata", obj, 404, params=[name_param]),
        "/v2/models/{name}/versions/{version}": get(
            "Model metadata", obj, 404, params=[name_param, version_param]
        ),
        "/v2/models/{name}/ready": get("Model readiness", obj, 404, 503, params=[name_param]),
        "/v2/models/{name}/versions/{version}/ready": get(
            "Model readiness", obj, 404, 503, params=[name_param, version_param]
        ),
        "/v2/models/{name}/infer": post(
            "Inference (Open Inference Protocol V2)",
            "#/components/schemas/InferenceRequest",
            infer_resp,
            [name_param],
        ),
        "/v2/models/{name}/versions/{version}/infer": post(
            "Inference (Open Inference Protocol V2)",
            "#/components/schemas/InferenceRequest",
            infer_resp,
            [name_param, version_param],
        ),
        "/v2/models/{name}/feedback": post(
            "Ground truth for earlier predictions, by request id",
            "#/components/schemas/Feedback",
            obj,
            [name_param],
        ),
        "/v2/models/{name}/drift": get("Drift report", obj, 404, params=[name_param]),
        "/v2/models/{name}/monitoring": get(
            "Drift summary, live accuracy and counts", obj, 404, params=[name_param]
        ),
        "/v1/models": get("Served models (KServe V1)", obj),
        "/v1/models/{name}": get("Model status (KServe V1)", obj, 404, params=[name_param]),
        "/v1/models/{name}:predict": post(
            "Prediction (KServe V1)",
            "#/components/schemas/V1Request",
            {"$ref": "#/components/schemas/V1Response"},
            [
                name_param,
                {
                    "name": "probabilities",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "enum": ["true", "false"]},
                },
            ],
        ),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "OK",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": get("This document", obj),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": f"kubeloop-serve: {name}",
            "version": version,
            "description": "KServe V1 and Open Inference Protocol V2 for a Kubeloop ModelVersion.",
        },
        "paths": paths,
        "components": {"schemas": schemas},
    }
