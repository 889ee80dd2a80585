"""Open Inference Protocol messages over gRPC <-> the V2 codec. Pure: no server, no model.

A ``ModelInferRequest`` becomes the JSON body the HTTP path would have parsed (the same
tensors, parameters, outputs and id) and goes through the SAME validation,
:meth:`~.protocol.Codec.decode_v2`, with messages naming the protobuf field a value came
from (``inputs[0].contents.fp64_contents[5]``, ``raw_input_contents[1]``). What only
protobuf can express is checked here first:

- the values sit in the contents field of the tensor's datatype (FP64 ``fp64_contents``,
  FP32 ``fp32_contents``, INT64 ``int64_contents``, INT32 ``int_contents``, BOOL
  ``bool_contents``, BYTES ``bytes_contents``), or in ``raw_input_contents`` (one entry
  per input, little-endian, BYTES as 4-byte length + bytes), never both;
- BYTES must be UTF-8 (a category is a string);
- a NaN in an FP tensor is a missing value, as JSON's ``null`` is: accepted only for the
  features the model's pipeline imputes. Infinity is refused like any value beyond the
  range the model computes in.

Responses carry the outputs :meth:`~.protocol.Codec.v2_outputs` builds for HTTP, in the
typed contents fields, or in ``raw_output_contents`` when the request sent raw inputs (the
form binary clients such as tritonclient read back).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from kubeloop_runtime.serve.errors import InvalidInputError, ModelNotFoundError
from kubeloop_runtime.serve.oip import grpc_predict_v2_pb2 as pb
from kubeloop_runtime.serve.protocol import Codec, Decoded

SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

# The InferTensorContents field of each datatype the V2 codec takes.
CONTENTS_FIELD = {
    "FP64": "fp64_contents",
    "FP32": "fp32_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "BOOL": "bool_contents",
    "BYTES": "bytes_contents",
}
_ALL_CONTENTS = tuple(f.name for f in pb.InferTensorContents.DESCRIPTOR.fields)
# Little-endian element layouts of raw contents (BYTES is length-prefixed instead).
RAW_DTYPE = {"FP64": "<f8", "FP32": "<f4", "INT64": "<i8", "INT32": "<i4", "BOOL": "|b1"}
_FLOATS = frozenset({"FP64", "FP32"})
_LENGTH = struct.Struct("<I")


def _check_model(name: str, version: str, served: str, served_version: str, where: str) -> None:
    if name != served:
        raise ModelNotFoundError(
            f"{where}: model {name!r} not found; this server serves {served!r}"
        )
    if version and version != served_version:
        raise ModelNotFoundError(
            f"{where}: model {name!r} version {version!r} not found; serving version"
            f" {served_version}"
        )


def check_model(name: str, version: str, served: str, served_version: str) -> None:
    """ModelReady/ModelMetadata: the name (and version, when given) must be the served one."""
    _check_model(name, version, served, served_version, "name")


def parameter_value(p: pb.InferParameter) -> Any:
    """An InferParameter as the JSON value it stands for (None when it holds nothing)."""
    which = p.WhichOneof("parameter_choice")
    return None if which is None else getattr(p, which)


def parameters(params: Mapping[str, pb.InferParameter]) -> dict[str, Any]:
    return {k: parameter_value(v) for k, v in params.items()}


def _typed_values(t: pb.ModelInferRequest.InferInputTensor, where: str) -> tuple[list[Any], str]:
    """The values of a tensor sent in typed contents, and the field they came from."""
    field = CONTENTS_FIELD.get(t.datatype)
    for other in _ALL_CONTENTS:
        if other != field and len(getattr(t.contents, other)):
            expected = f"contents.{field}" if field else "a datatype the model takes"
            raise InvalidInputError(
                f"{where}.contents.{other}: a {t.datatype or 'tensor without datatype'} tensor"
                f" carries its values in {expected}"
            )
    if field is None:  # the codec names the datatype problem
        return [], f"{where}.contents"
    return list(getattr(t.contents, field)), f"{where}.contents.{field}"


def _raw_values(raw: bytes, datatype: str, where: str) -> list[Any]:
    """Decode one raw_input_contents entry (row-major, little-endian) into values."""
    if datatype == "BYTES":
        out: list[Any] = []
        pos, end = 0, len(raw)
        while pos < end:
            if end - pos < 4:
                raise InvalidInputError(
                    f"{where}: BYTES element {len(out)} is cut short (a 4-byte length"
                    " prefix is required)"
                )
            (n,) = _LENGTH.unpack_from(raw, pos)
            pos += 4
            if end - pos < n:
                raise InvalidInputError(
                    f"{where}: BYTES element {len(out)} declares {n} bytes, {end - pos} remain"
                )
            out.append(raw[pos : pos + n])
            pos += n
        return out
    layout = RAW_DTYPE.get(datatype)
    if layout is None:  # the codec names the datatype problem
        return []
    size = np.dtype(layout).itemsize
    if len(raw) % size:
        raise InvalidInputError(
            f"{where}: {len(raw)} bytes are not a whole number of {datatype} elements"
            f" ({size} bytes each)"
        )
    values: list[Any] = np.frombuffer(raw, dtype=layout).tolist()
    return values


def _utf8(values: list[Any], where: str) -> list[Any]:
    out = []
    for j, v in enumerate(values):
        try:
            out.append(v.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise InvalidInputError(f"{where}[{j}]: BYTES must be UTF-8 text: {e.reason}") from e
    return out


def _missing_as_null(values: list[Any]) -> list[Any]:
    """NaN is a missing value (JSON's null); the codec decides whether it may be."""
    isnan = math.isnan
    for v in values:
        if isnan(v):
            return [None if isnan(u) else u for u in values]
    return values


def request_body(req: pb.ModelInferRequest) -> tuple[dict[str, Any], list[str]]:
    """The JSON body a ModelInferRequest stands for, and where each input's values are."""
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise InvalidInputError(
            f"raw_input_contents: {len(raw)} entries for {len(req.inputs)} inputs; send one"
            " per input, in the order of inputs"
        )
    tensors: list[dict[str, Any]] = []
    fields: list[str] = []
    for i, t in enumerate(req.inputs):
        where = f"inputs[{i}]"
        if raw:
            if t.HasField("contents"):
                raise InvalidInputError(
                    f"{where}.contents: must be empty when raw_input_contents carries the values"
                )
            field = f"raw_input_contents[{i}]"
            values = _raw_values(raw[i], t.datatype, field)
        else:
            values, field = _typed_values(t, where)
        if t.datatype == "BYTES":
            values = _utf8(values, field)
        elif t.datatype in _FLOATS:
            values = _missing_as_null(values)
        tensors.append(
            {"name": t.name, "shape": list(t.shape), "datatype": t.datatype, "data": values}
        )
        fields.append(field)
    body: dict[str, Any] = {"inputs": tensors}
    if req.id:
        body["id"] = req.id
    if req.parameters:
        body["parameters"] = parameters(req.parameters)
    if req.outputs:
        body["outputs"] = [{"name": o.name} for o in req.outputs]
    return body, fields


def decode_infer(
    codec: Codec, req: pb.ModelInferRequest, served: str, served_version: str
) -> Decoded:
    """Validate a ModelInferRequest exactly as the HTTP path validates its JSON."""
    _check_model(req.model_name, req.model_version, served, served_version, "model_name")
    body, fields = request_body(req)
    return codec.decode_v2(body, fields)


def _raw(datatype: str, data: list[Any]) -> bytes:
    if datatype == "BYTES":
        parts = []
        for v in data:
            b = v.encode("utf-8") if isinstance(v, str) else bytes(v)
            parts.append(_LENGTH.pack(len(b)))
            parts.append(b)
        return b"".join(parts)
    return np.asarray(data, dtype=RAW_DTYPE[datatype]).tobytes()


def infer_response(
    outputs: list[dict[str, Any]], *, name: str, version: str, request_id: str, raw: bool
) -> pb.ModelInferResponse:
    """Encode the outputs ``Codec.v2_outputs`` made (typed contents, or raw when asked)."""
    resp = pb.ModelInferResponse(model_name=name, model_version=version, id=request_id)
    for o in outputs:
        datatype: str = o["datatype"]
        data: list[Any] = o["data"]
        tensor = resp.outputs.add(name=o["name"], datatype=datatype, shape=o["shape"])
        if raw:
            resp.raw_output_contents.append(_raw(datatype, data))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(
                v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in data
            )
        else:
            getattr(tensor.contents, CONTENTS_FIELD[datatype]).extend(data)
    return resp


def metadata_response(doc: Mapping[str, Any]) -> pb.ModelMetadataResponse:
    """The HTTP metadata document (``DataPlane.metadata_v2``) as a ModelMetadataResponse."""

    def tensors(items: list[dict[str, Any]]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [
            pb.ModelMetadataResponse.TensorMetadata(
                name=t["name"], datatype=t["datatype"], shape=t["shape"]
            )
            for t in items
        ]

    return pb.ModelMetadataResponse(
        name=doc["name"],
        versions=doc["versions"],
        platform=doc["platform"],
        inputs=tensors(doc["inputs"]),
        outputs=tensors(doc["outputs"]),
    )
