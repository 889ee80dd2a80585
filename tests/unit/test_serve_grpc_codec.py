"""The gRPC codec: ModelInferRequest -> the same validated rows as the HTTP JSON body, and
outputs -> ModelInferResponse, for every datatype the HTTP path takes (FP64, FP32, INT64,
INT32, BOOL, BYTES), in typed contents and in raw contents; errors carry the gRPC status
code of their typed error and name the protobuf field."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import pytest

from kubeloop_runtime import api
from kubeloop_runtime.serve import grpc_codec
from kubeloop_runtime.serve.errors import InvalidInputError, ModelNotFoundError, ServeError
from kubeloop_runtime.serve.oip import grpc_predict_v2_pb2 as pb
from kubeloop_runtime.serve.protocol import Codec

Tensor = pb.ModelInferRequest.InferInputTensor

# One feature of each signature dtype; "size" is imputed (may be missing).
MIXED = api.Signature.model_validate(
    {
        "inputs": [
            {"name": "size", "dtype": "float64"},
            {"name": "count", "dtype": "int64"},
            {"name": "colour", "dtype": "string", "categories": ["red", "blue"]},
            {"name": "flag", "dtype": "bool"},
        ],
        "output": {"name": "predict", "dtype": "string", "classes": ["a", "b"]},
    }
)
NUMERIC = api.Signature.model_validate(
    {
        "inputs": [{"name": f"f{i}", "dtype": "float64"} for i in range(3)],
        "output": {"name": "predict", "dtype": "int64", "classes": [0, 1]},
    }
)


def _codec(sig: api.Signature, imputed: frozenset[str] = frozenset()) -> Codec:
    return Codec(
        sig,
        api.Task.CLASSIFICATION,
        max_rows=100,
        n_classes=2,
        imputed=imputed,
        classes=list(sig.output.classes or []),
    )


def _raw(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(v)) + v for v in values)
    return np.asarray(values, dtype=grpc_codec.RAW_DTYPE[datatype]).tobytes()


def _tensor(name: str, datatype: str, shape: list[int], values: list[Any]) -> Tensor:
    t = Tensor(name=name, datatype=datatype, shape=shape)
    getattr(t.contents, grpc_codec.CONTENTS_FIELD[datatype]).extend(values)
    return t


def _as_raw(req: pb.ModelInferRequest) -> pb.ModelInferRequest:
    """The same request with every input's values in raw_input_contents."""
    out = pb.ModelInferRequest()
    out.CopyFrom(req)
    for t in out.inputs:
        values = list(getattr(t.contents, grpc_codec.CONTENTS_FIELD[t.datatype]))
        out.raw_input_contents.append(_raw(t.datatype, values))
        t.ClearField("contents")
    return out


def _decode(codec: Codec, req: pb.ModelInferRequest) -> Any:
    return grpc_codec.decode_infer(codec, req, "m", "1")


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    for u, v in zip(a.ravel().tolist(), b.ravel().tolist(), strict=True):
        assert (u == v and type(u) is type(v)) or (math.isnan(u) and math.isnan(v)), (u, v)


# ----------------------------------------------------------------------- equal to HTTP


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
@pytest.mark.parametrize(
    ("size_type", "count_type"), [("FP64", "INT64"), ("FP32", "INT32"), ("INT64", "FP64")]
)
def test_one_tensor_per_feature_decodes_as_the_http_body(
    raw: bool, size_type: str, count_type: str
) -> None:
    codec = _codec(MIXED, imputed=frozenset({"size"}))
    sizes = [1.5, 2.0, 3.25] if size_type.startswith("FP") else [1, 2, 3]
    counts = [4, 5, 6]
    counts_sent = [float(c) for c in counts] if count_type.startswith("FP") else counts
    colours, flags = ["red", "blue", "red"], [True, False, True]
    req = pb.ModelInferRequest(
        model_name="m",
        id="req-1",
        inputs=[
            _tensor("size", size_type, [3], sizes),
            _tensor("count", count_type, [3, 1], counts_sent),
            _tensor("colour", "BYTES", [3], [c.encode() for c in colours]),
            _tensor("flag", "BOOL", [3], flags),
        ],
        parameters={"probabilities": pb.InferParameter(bool_param=True)},
    )
    if raw:
        req = _as_raw(req)
    http = codec.decode_v2(
        {
            "id": "req-1",
            "parameters": {"probabilities": True},
            "inputs": [
                {"name": "size", "shape": [3], "datatype": size_type, "data": sizes},
                {"name": "count", "shape": [3, 1], "datatype": count_type, "data": counts_sent},
                {"name": "colour", "shape": [3], "datatype": "BYTES", "data": colours},
                {"name": "flag", "shape": [3], "datatype": "BOOL", "data": flags},
            ],
        }
    )
    got = _decode(codec, req)
    _same(got.x, http.x)
    assert got.x[:, 2].tolist() == colours and got.x[:, 3].tolist() == flags
    assert (got.want_proba, got.outputs, got.request_id) == (
        http.want_proba,
        http.outputs,
        http.request_id,
    )
    assert got.want_proba and got.request_id == "req-1"


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
@pytest.mark.parametrize("datatype", ["FP64", "FP32", "INT64", "INT32"])
def test_one_matrix_tensor_decodes_as_the_http_body(raw: bool, datatype: str) -> None:
    codec = _codec(NUMERIC)
    data: list[Any] = [0.5, 1.0, -2.25, 3.0, 4.5, 5.0]
    if datatype.startswith("INT"):
        data = [1, -2, 3, 4, 5, -6]
    req = pb.ModelInferRequest(model_name="m", inputs=[_tensor("x", datatype, [2, 3], data)])
    req.outputs.add(name="predict")
    if raw:
        req = _as_raw(req)
    got = _decode(codec, req)
    http = codec.decode_v2(
        {
            "inputs": [{"name": "x", "shape": [2, 3], "datatype": datatype, "data": data}],
            "outputs": [{"name": "predict"}],
        }
    )
    _same(got.x, http.x)
    assert got.x.tolist() == np.asarray(data, dtype=np.float64).reshape(2, 3).tolist()
    assert got.outputs == ("predict",) and not got.want_proba and got.request_id is None


def test_fp32_values_are_the_float32_the_client_sent() -> None:
    codec = _codec(NUMERIC)
    req = pb.ModelInferRequest(
        model_name="m", inputs=[_tensor("x", "FP32", [1, 3], [0.1, 0.2, 0.3])]
    )
    got = _decode(codec, req).x
    assert got.tolist() == [np.float32([0.1, 0.2, 0.3]).astype(np.float64).tolist()]


def test_nan_is_a_missing_value_where_the_model_imputes() -> None:
    codec = _codec(MIXED, imputed=frozenset({"size"}))
    req = pb.ModelInferRequest(
        model_name="m",
        inputs=[
            _tensor("size", "FP64", [2], [float("nan"), 2.0]),
            _tensor("count", "INT64", [2], [1, 2]),
            _tensor("colour", "BYTES", [2], [b"red", b"blue"]),
            _tensor("flag", "BOOL", [2], [True, True]),
        ],
    )
    x = _decode(codec, req).x
    assert math.isnan(x[0, 0]) and x[1, 0] == 2.0


# ----------------------------------------------------------------------- errors


def _refused(codec: Codec, req: pb.ModelInferRequest) -> ServeError:
    with pytest.raises(ServeError) as e:
        _decode(codec, req)
    return e.value


def test_nan_where_the_model_does_not_impute_is_refused_naming_the_field() -> None:
    codec = _codec(NUMERIC)
    req = pb.ModelInferRequest(
        model_name="m", inputs=[_tensor("x", "FP64", [1, 3], [1.0, float("nan"), 3.0])]
    )
    e = _refused(codec, req)
    assert isinstance(e, InvalidInputError) and e.grpc_code == "INVALID_ARGUMENT"
    assert e.message.startswith("inputs[0].contents.fp64_contents[1] (feature 'f1'): got null")
    e = _refused(codec, _as_raw(req))
    assert e.message.startswith("raw_input_contents[0][1] (feature 'f1'): got null")


def test_infinity_is_refused_naming_the_field() -> None:
    req = pb.ModelInferRequest(
        model_name="m", inputs=[_tensor("x", "FP64", [1, 3], [1.0, 2.0, float("-inf")])]
    )
    e = _refused(_codec(NUMERIC), req)
    assert e.message.startswith("inputs[0].contents.fp64_contents[2] (feature 'f2'): -inf")
    assert e.grpc_code == "INVALID_ARGUMENT"


def test_values_in_another_datatypes_field_are_refused() -> None:
    t = Tensor(name="x", datatype="FP64", shape=[1, 3])
    t.contents.int64_contents.extend([1, 2, 3])
    e = _refused(_codec(NUMERIC), pb.ModelInferRequest(model_name="m", inputs=[t]))
    assert e.message == (
        "inputs[0].contents.int64_contents: a FP64 tensor carries its values in"
        " contents.fp64_contents"
    )


def test_count_and_shape_mismatches_name_the_field() -> None:
    codec = _codec(NUMERIC)
    req = pb.ModelInferRequest(
        model_name="m", inputs=[_tensor("x", "FP64", [2, 3], [1.0, 2.0, 3.0])]
    )
    e = _refused(codec, req)
    assert e.message == (
        "inputs[0].contents.fp64_contents: 3 values do not match shape [2, 3] (6 values)"
    )
    e = _refused(codec, _as_raw(req))
    assert e.message == "raw_input_contents[0]: 3 values do not match shape [2, 3] (6 values)"
    req.inputs[0].shape[:] = [-1, 3]
    assert _refused(codec, req).message == (
        "inputs[0].shape: expected a list of non-negative integers"
    )


def test_datatype_that_cannot_carry_the_feature_is_refused() -> None:
    req = pb.ModelInferRequest(
        model_name="m", inputs=[_tensor("x", "BYTES", [1, 3], [b"a", b"b", b"c"])]
    )
    e = _refused(_codec(NUMERIC), req)
    assert e.message.startswith("inputs[0].datatype: BYTES cannot carry feature 'f0'")
    req.inputs[0].datatype = "UINT8"
    e = _refused(_codec(NUMERIC), req)
    assert e.message.startswith("inputs[0].contents.bytes_contents: a UINT8 tensor carries")


def test_raw_contents_errors() -> None:
    codec = _codec(NUMERIC)
    req = pb.ModelInferRequest(model_name="m", inputs=[_tensor("x", "FP64", [1, 3], [1.0] * 3)])
    raw = _as_raw(req)
    raw.raw_input_contents[0] = raw.raw_input_contents[0][:-1]
    assert _refused(codec, raw).message == (
        "raw_input_contents[0]: 23 bytes are not a whole number of FP64 elements (8 bytes each)"
    )
    raw.raw_input_contents.append(b"")
    assert _refused(codec, raw).message.startswith("raw_input_contents: 2 entries for 1 inputs")
    both = _as_raw(req)
    both.inputs[0].contents.fp64_contents.extend([1.0, 2.0, 3.0])
    assert _refused(codec, both).message == (
        "inputs[0].contents: must be empty when raw_input_contents carries the values"
    )


def test_bytes_must_be_utf8_and_whole() -> None:
    codec = _codec(MIXED, imputed=frozenset({"size"}))

    def req(colour: bytes, raw: bytes | None = None) -> pb.ModelInferRequest:
        r = pb.ModelInferRequest(
            model_name="m",
            inputs=[
                _tensor("size", "FP64", [1], [1.0]),
                _tensor("count", "INT64", [1], [1]),
                _tensor("colour", "BYTES", [1], [colour]),
                _tensor("flag", "BOOL", [1], [True]),
            ],
        )
        if raw is not None:
            r = _as_raw(r)
            r.raw_input_contents[2] = raw
        return r

    e = _refused(codec, req(b"\xff\xfe"))
    assert e.message.startswith("inputs[2].contents.bytes_contents[0]: BYTES must be UTF-8")
    e = _refused(codec, req(b"red", raw=struct.pack("<I", 9) + b"red"))
    assert e.message == "raw_input_contents[2]: BYTES element 0 declares 9 bytes, 3 remain"
    e = _refused(codec, req(b"red", raw=b"\x03\x00"))
    assert e.message.startswith("raw_input_contents[2]: BYTES element 0 is cut short")
    assert _decode(codec, req(b"bleu")).x[0, 2] == "bleu"  # unseen: drift, not 400


def test_unknown_model_or_version_is_not_found() -> None:
    codec = _codec(NUMERIC)
    req = pb.ModelInferRequest(model_name="other", inputs=[_tensor("x", "FP64", [1, 3], [1.0] * 3)])
    e = _refused(codec, req)
    assert isinstance(e, ModelNotFoundError) and e.grpc_code == "NOT_FOUND"
    assert e.message == "model_name: model 'other' not found; this server serves 'm'"
    req.model_name, req.model_version = "m", "7"
    e = _refused(codec, req)
    assert e.grpc_code == "NOT_FOUND" and "version '7' not found; serving version 1" in e.message
    req.model_version = "1"
    assert _decode(codec, req).x.shape == (1, 3)


def test_parameters_and_outputs_are_checked_as_over_http() -> None:
    codec = _codec(NUMERIC)
    req = pb.ModelInferRequest(
        model_name="m",
        inputs=[_tensor("x", "FP64", [1, 3], [1.0] * 3)],
        parameters={"probabilities": pb.InferParameter(string_param="yes")},
    )
    assert _refused(codec, req).message == (
        "parameters.probabilities: expected true or false, got 'yes'"
    )
    del req.parameters["probabilities"]
    req.outputs.add(name="scores")
    assert _refused(codec, req).message.startswith("outputs[0].name: unknown output 'scores'")


# ----------------------------------------------------------------------- responses


def _values(resp: pb.ModelInferResponse, k: int) -> list[Any]:
    t = resp.outputs[k]
    if resp.raw_output_contents:
        raw = resp.raw_output_contents[k]
        if t.datatype == "BYTES":
            out, pos = [], 0
            while pos < len(raw):
                (n,) = struct.unpack_from("<I", raw, pos)
                out.append(raw[pos + 4 : pos + 4 + n].decode())
                pos += 4 + n
            return out
        values: list[Any] = np.frombuffer(raw, dtype=grpc_codec.RAW_DTYPE[t.datatype]).tolist()
        return values
    got = list(getattr(t.contents, grpc_codec.CONTENTS_FIELD[t.datatype]))
    return [v.decode() for v in got] if t.datatype == "BYTES" else got


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw"])
@pytest.mark.parametrize(
    ("datatype", "labels"),
    [
        ("INT64", [0, 2, 1]),
        ("FP64", [0.5, -1.25, 3.0]),
        ("BYTES", ["setosa", "virginica", "é"]),
        ("BOOL", [True, False, True]),
    ],
)
def test_outputs_round_trip(raw: bool, datatype: str, labels: list[Any]) -> None:
    proba = [0.25, 0.75, 1.0, 0.0, 0.5, 0.5]
    outputs = [
        {"name": "predict", "shape": [3], "datatype": datatype, "data": labels},
        {"name": "predict_proba", "shape": [3, 2], "datatype": "FP64", "data": proba},
    ]
    resp = grpc_codec.infer_response(outputs, name="m", version="1", request_id="r", raw=raw)
    wire = pb.ModelInferResponse.FromString(resp.SerializeToString())
    assert (wire.model_name, wire.model_version, wire.id) == ("m", "1", "r")
    assert [(o.name, o.datatype, list(o.shape)) for o in wire.outputs] == [
        ("predict", datatype, [3]),
        ("predict_proba", "FP64", [3, 2]),
    ]
    assert len(wire.raw_output_contents) == (2 if raw else 0)
    assert _values(wire, 0) == labels
    assert _values(wire, 1) == proba
