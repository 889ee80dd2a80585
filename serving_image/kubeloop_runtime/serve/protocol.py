"""Decode KServe V1 and Open Inference Protocol V2 requests into validated rows, and
encode responses. Pure functions of parsed JSON: no HTTP, no model calls.

Validation is strict and names what is wrong: feature count and names, JSON types per
feature dtype (a JSON ``true`` is never a number, a number is never a category), shapes,
datatypes, empty and oversized batches. NaN and Infinity cannot reach here: orjson refuses
them (and numbers that overflow a double) while parsing. Numbers must also lie within the
range the model computes in: the ONNX graph takes float32 inputs and scikit-learn's trees
cast to float32, so a number beyond float32's range (about ±3.4e38) is refused, naming its
row and column, before it can reach (and fail) a batch shared with other clients. ``null``
is a missing value, accepted only for features the model's pipeline imputes.

Size (~530 lines): the V1 and V2 codecs share one validation of rows per feature dtype
on the hot path (measured in docs/serving.md); apart, that validation would be written twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kubeloop_runtime import api
from kubeloop_runtime.serve.errors import InvalidInputError

V2_DATATYPES = ("FP64", "FP32", "INT64", "INT32", "BYTES", "BOOL")
# Which tensor datatypes may carry a feature of each signature dtype. BYTES carries strings
# only (Open Inference Protocol); rows mixing strings and numbers are sent as one tensor per
# feature, each with its own datatype.
_COMPAT: dict[str, frozenset[str]] = {
    "float64": frozenset({"FP64", "FP32", "INT64", "INT32"}),
    "int64": frozenset({"FP64", "FP32", "INT64", "INT32"}),
    "string": frozenset({"BYTES"}),
    "bool": frozenset({"BOOL"}),
}
# The V2 tensor datatype of each signature dtype (metadata inputs, and the predict output).
V2_DATATYPE = {"float64": "FP64", "int64": "INT64", "string": "BYTES", "bool": "BOOL"}
PREDICT = "predict"
PREDICT_PROBA = "predict_proba"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
# The largest magnitude the model computes with (float32); beyond it a value is infinite.
FLOAT_LIMIT = float(np.finfo(np.float32).max)
_NAN = float("nan")


def _show(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True, slots=True)
class Decoded:
    """Validated rows and what the client asked for."""

    x: np.ndarray  # [N, F], float64 when every feature is numeric, else object
    want_proba: bool
    outputs: tuple[str, ...]  # output names to return, in order
    request_id: str | None


class Codec:
    """Validation and encoding against one model signature."""

    def __init__(
        self,
        signature: api.Signature,
        task: api.Task,
        *,
        max_rows: int,
        n_classes: int,
        imputed: frozenset[str] = frozenset(),
        classes: list[Any] | None = None,
    ) -> None:
        self.names = [f.name for f in signature.inputs]
        self.nullable = [f.name in imputed for f in signature.inputs]
        self.any_nullable = any(self.nullable)
        # The labels feedback may carry: the model's classes (classification).
        self.classes: frozenset[Any] | None = (
            frozenset(classes) if classes and task is api.Task.CLASSIFICATION else None
        )
        self.dtypes = [f.dtype for f in signature.inputs]
        self.index = {n: k for k, n in enumerate(self.names)}
        self.n_features = len(self.names)
        self.numeric = all(d in ("float64", "int64") for d in self.dtypes)
        self.all_float = all(d == "float64" for d in self.dtypes)
        self.max_rows = max_rows
        self.classifier = task is api.Task.CLASSIFICATION
        self.n_classes = n_classes
        self.label_dtype = signature.output.dtype
        self.output_datatype = V2_DATATYPE[self.label_dtype]
        self.array_dtype: Any = np.float64 if self.numeric else object

    # ------------------------------------------------------------------ values
    def _value(self, v: Any, k: int, where: str) -> Any:
        """Check one value against feature ``k``'s dtype; return it as stored."""
        dtype = self.dtypes[k]
        t = type(v)
        if v is None:
            if self.nullable[k]:
                return _NAN  # missing: the pipeline's imputer fills it
            if self.any_nullable:
                pairs = zip(self.names, self.nullable, strict=True)
                imputed = ", ".join(repr(n) for n, ok in pairs if ok)
                hint = f"; only {imputed} may be null (the model imputes them)"
            else:
                hint = "; the model imputes no feature, so none may be null"
            raise InvalidInputError(f"{where} (feature {self.names[k]!r}): got null{hint}")
        if dtype == "float64":
            if t is float or t is int:
                if not -FLOAT_LIMIT <= v <= FLOAT_LIMIT:
                    self._out_of_range(v, k, where)
                return v
        elif dtype == "int64":
            if t is float and v.is_integer():
                v, t = int(v), int
            if t is int:
                if not _INT64_MIN <= v <= _INT64_MAX:  # would wrap silently when cast
                    raise InvalidInputError(
                        f"{where} (feature {self.names[k]!r}): {v} is out of the int64 range"
                    )
                return v
            if t is float:
                raise InvalidInputError(
                    f"{where} (feature {self.names[k]!r}): expected an integer, got {_show(v)}"
                )
        elif dtype == "string":
            if t is str:
                return v
            raise InvalidInputError(
                f"{where} (feature {self.names[k]!r}): expected a string category, got {_show(v)}"
            )
        elif dtype == "bool" and t is bool:
            return v
        expected = {"float64": "a number", "int64": "an integer", "bool": "true or false"}[dtype]
        raise InvalidInputError(
            f"{where} (feature {self.names[k]!r}): expected {expected}, got {_show(v)}"
        )

    def _out_of_range(self, v: Any, k: int, where: str) -> None:
        raise InvalidInputError(
            f"{where} (feature {self.names[k]!r}): {v:g} is outside the range the model"
            f" computes in (float32, magnitude at most {FLOAT_LIMIT:.7g})"
        )

    def _check_range(self, x: np.ndarray, where: str, flat: bool) -> None:
        """Refuse float rows with a value beyond float32 (name the first, row and column)."""
        over = np.abs(x) > FLOAT_LIMIT  # NaN (a null) compares False
        if not over.any():
            return
        i, j = (int(a[0]) for a in np.nonzero(over))
        at = f"{where}[{i * self.n_features + j}]" if flat else f"{where}[{i}][{j}]"
        self._out_of_range(float(x[i, j]), j, at)

    def _rows_count(self, n: int, where: str) -> None:
        if n == 0:
            raise InvalidInputError(f"{where}: empty batch; send at least one row")
        if n > self.max_rows:
            raise InvalidInputError(
                f"{where}: {n} rows exceed the limit of {self.max_rows} per request"
            )

    # ------------------------------------------------------------------ row lists
    def rows(self, rows: Any, where: str) -> np.ndarray:
        """Rows as lists of F values (in signature order) or objects keyed by feature."""
        if type(rows) is not list:
            raise InvalidInputError(f"{where}: expected a list of rows, got {_show(rows)}")
        self._rows_count(len(rows), where)
        f = self.n_features
        first = rows[0]
        if type(first) is dict:
            return self._dict_rows(rows, where)
        if self.all_float:
            for i, row in enumerate(rows):
                if type(row) is not list or len(row) != f:
                    self._bad_row(row, i, where)
                for v in row:
                    t = type(v)
                    if t is not float and t is not int:
                        for j, u in enumerate(row):  # checks every value (nulls may pass)
                            if type(u) is not float and type(u) is not int:
                                self._value(u, j, f"{where}[{i}][{j}]")
                        break
            x = np.array(rows, dtype=np.float64)  # null -> NaN (only where checked above)
            self._check_range(x, where, flat=False)
            return x
        out = []
        value = self._value
        for i, row in enumerate(rows):
            if type(row) is not list or len(row) != f:
                self._bad_row(row, i, where)
            out.append([value(v, j, f"{where}[{i}][{j}]") for j, v in enumerate(row)])
        return np.array(out, dtype=self.array_dtype).reshape(len(out), f)

    def _bad_row(self, row: Any, i: int, where: str) -> None:
        if type(row) is dict:
            raise InvalidInputError(f"{where}[{i}]: do not mix list rows and object rows")
        if type(row) is not list:
            raise InvalidInputError(
                f"{where}[{i}]: expected a row of {self.n_features} values, got {_show(row)}"
            )
        raise InvalidInputError(
            f"{where}[{i}]: expected {self.n_features} features"
            f" ({', '.join(self.names)}), got {len(row)}"
        )

    def _dict_rows(self, rows: list[Any], where: str) -> np.ndarray:
        names = self.names
        wanted = set(names)
        out = []
        value = self._value
        for i, row in enumerate(rows):
            if type(row) is not dict:
                raise InvalidInputError(f"{where}[{i}]: do not mix object rows and list rows")
            if len(row) != len(names) or row.keys() != wanted:
                self._names_error(set(row), f"{where}[{i}]")
            out.append([value(row[n], k, f"{where}[{i}].{n}") for k, n in enumerate(names)])
        return np.array(out, dtype=self.array_dtype).reshape(len(out), len(names))

    def _names_error(self, got: set[str], where: str) -> None:
        missing = [n for n in self.names if n not in got]
        unknown = sorted(got - set(self.names))
        parts = []
        if missing:
            parts.append(f"missing feature(s) {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown feature(s) {', '.join(map(repr, unknown))}")
        raise InvalidInputError(f"{where}: {'; '.join(parts) or 'feature names do not match'}")

    # ------------------------------------------------------------------ V1
    def decode_v1(self, body: Any, proba_query: bool) -> Decoded:
        if type(body) is not dict:
            raise InvalidInputError("body: expected a JSON object with 'instances'")
        if "instances" not in body:
            raise InvalidInputError("body: 'instances' is required")
        unknown = set(body) - {"instances", "probabilities", "id", "parameters"}
        if unknown:
            raise InvalidInputError(f"body: unknown field(s) {', '.join(sorted(unknown))}")
        want = proba_query
        flag = body.get("probabilities")
        if flag is not None:
            if type(flag) is not bool:
                raise InvalidInputError(f"probabilities: expected true or false, got {_show(flag)}")
            want = want or flag
        params = body.get("parameters")
        if params is not None:
            want = self._proba_param(params, "parameters") or want
        if want and not self.classifier:
            raise InvalidInputError(
                "probabilities: the model is a regressor; it has no probabilities"
            )
        rid = _request_id(body.get("id"), "id")
        x = self.rows(body["instances"], "instances")
        return Decoded(x, want, (PREDICT,), rid)

    # ------------------------------------------------------------------ V2
    def _proba_param(self, params: Any, where: str) -> bool:
        if type(params) is not dict:
            raise InvalidInputError(f"{where}: expected an object, got {_show(params)}")
        flag = params.get("probabilities", False)
        if type(flag) is not bool:
            raise InvalidInputError(
                f"{where}.probabilities: expected true or false, got {_show(flag)}"
            )
        return flag

    def decode_v2(self, body: Any) -> Decoded:
        if type(body) is not dict:
            raise InvalidInputError("body: expected a JSON object with 'inputs'")
        unknown = set(body) - {"id", "inputs", "outputs", "parameters"}
        if unknown:
            raise InvalidInputError(f"body: unknown field(s) {', '.join(sorted(unknown))}")
        rid = _request_id(body.get("id"), "id")
        want = False
        if "parameters" in body and body["parameters"] is not None:
            want = self._proba_param(body["parameters"], "parameters")
        outputs: tuple[str, ...]
        requested = body.get("outputs")
        if requested is not None:
            outputs = self._outputs(requested)
            want = PREDICT_PROBA in outputs
        else:
            outputs = (PREDICT, PREDICT_PROBA) if want else (PREDICT,)
        if want and not self.classifier:
            raise InvalidInputError(
                "predict_proba: the model is a regressor; it has no probabilities"
            )
        inputs = body.get("inputs")
        if type(inputs) is not list or not inputs:
            raise InvalidInputError("inputs: expected a non-empty list of tensors")
        for i, t in enumerate(inputs):
            if type(t) is not dict:
                raise InvalidInputError(f"inputs[{i}]: expected a tensor object, got {_show(t)}")
        if len(inputs) == 1 and inputs[0].get("name") not in self.index:
            x = self._tensor(inputs[0])
        elif len(inputs) == 1 and self.n_features > 1:
            raise InvalidInputError(
                f"inputs: one tensor named {inputs[0].get('name')!r} like a feature; send one"
                f" [N, {self.n_features}] tensor or one tensor per feature"
                f" ({', '.join(self.names)})"
            )
        else:
            x = self._columns(inputs)
        return Decoded(x, want, outputs, rid)

    def _outputs(self, requested: Any) -> tuple[str, ...]:
        if type(requested) is not list or not requested:
            raise InvalidInputError('outputs: expected a non-empty list of {"name": ...}')
        names: list[str] = []
        for i, o in enumerate(requested):
            if type(o) is not dict or type(o.get("name")) is not str:
                raise InvalidInputError(f"outputs[{i}]: expected an object with a string 'name'")
            name = o["name"]
            if name not in (PREDICT, PREDICT_PROBA):
                raise InvalidInputError(
                    f"outputs[{i}].name: unknown output {name!r}; use {PREDICT!r} or"
                    f" {PREDICT_PROBA!r}"
                )
            if name not in names:
                names.append(name)
        return tuple(names)

    def _header(self, t: dict[str, Any], where: str) -> tuple[list[int], str, Any]:
        unknown = set(t) - {"name", "shape", "datatype", "data", "parameters"}
        if unknown:
            raise InvalidInputError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        if type(t.get("name")) is not str:
            raise InvalidInputError(f"{where}.name: a string is required")
        shape = t.get("shape")
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            raise InvalidInputError(f"{where}.shape: expected a list of non-negative integers")
        datatype = t.get("datatype")
        if datatype not in V2_DATATYPES:
            raise InvalidInputError(
                f"{where}.datatype: expected one of {', '.join(V2_DATATYPES)},"
                f" got {_show(datatype)}"
            )
        if "data" not in t:
            raise InvalidInputError(f"{where}.data: required")
        if type(t["data"]) is not list:
            raise InvalidInputError(f"{where}.data: expected a list, got {_show(t['data'])}")
        return shape, datatype, t["data"]

    def _tensor(self, t: dict[str, Any]) -> np.ndarray:
        where = "inputs[0]"
        shape, datatype, data = self._header(t, where)
        f = self.n_features
        if len(shape) != 2 or shape[1] != f:
            raise InvalidInputError(
                f"{where}.shape: expected [N, {f}] ({', '.join(self.names)}), got {shape}"
            )
        n = shape[0]
        self._rows_count(n, f"{where}.shape")
        for k, d in enumerate(self.dtypes):
            if datatype not in _COMPAT[d]:
                raise InvalidInputError(
                    f"{where}.datatype: {datatype} cannot carry feature {self.names[k]!r}"
                    f" ({d}, {'/'.join(sorted(_COMPAT[d]))}); for rows that mix types send"
                    " one tensor per feature, each with its own datatype"
                )
        integer = datatype in ("INT64", "INT32")
        if data and type(data[0]) is list:  # nested [[...], ...]
            if len(data) != n:
                raise InvalidInputError(
                    f"{where}.data: {len(data)} rows do not match shape {shape}"
                )
            x = self.rows(data, f"{where}.data")
            if integer:
                self._integers(data, f"{where}.data", nested=True)
            return x
        if len(data) != n * f:
            raise InvalidInputError(
                f"{where}.data: {len(data)} values do not match shape {shape} ({n * f} values)"
            )
        if integer:
            self._integers(data, f"{where}.data", nested=False)
        if self.all_float:
            for v in data:
                t_ = type(v)
                if t_ is not float and t_ is not int:
                    for i, u in enumerate(data):  # checks every value (nulls may pass)
                        if type(u) is not float and type(u) is not int:
                            self._value(u, i % f, f"{where}.data[{i}]")
                    break
            x = np.array(data, dtype=np.float64).reshape(n, f)
            self._check_range(x, f"{where}.data", flat=True)
            return x
        value = self._value
        vals = [value(v, i % f, f"{where}.data[{i}]") for i, v in enumerate(data)]
        return np.array(vals, dtype=self.array_dtype).reshape(n, f)

    @staticmethod
    def _integers(data: list[Any], where: str, *, nested: bool) -> None:
        flat = [v for row in data for v in row] if nested else data
        for i, v in enumerate(flat):
            if v is None:  # a missing value: _value decides whether the feature may be null
                continue
            if type(v) is not int:
                raise InvalidInputError(
                    f"{where}[{i}]: an INT tensor holds integers, got {_show(v)}"
                )
            if not _INT64_MIN <= v <= _INT64_MAX:
                raise InvalidInputError(f"{where}[{i}]: {v} is out of the int64 range")

    def _columns(self, inputs: list[dict[str, Any]]) -> np.ndarray:
        """One tensor per feature, shape [N] or [N, 1]."""
        got = [t.get("name") for t in inputs]
        if len(set(map(str, got))) != len(got):
            raise InvalidInputError("inputs: feature names repeat")
        if set(map(str, got)) != set(self.names):
            self._names_error({str(g) for g in got}, "inputs")
        n: int | None = None
        cols: list[list[Any]] = [[] for _ in self.names]
        for i, t in enumerate(inputs):
            where = f"inputs[{i}]"
            shape, datatype, data = self._header(t, where)
            k = self.index[t["name"]]
            if datatype not in _COMPAT[self.dtypes[k]]:
                raise InvalidInputError(
                    f"{where}.datatype: {datatype} cannot carry feature {self.names[k]!r}"
                    f" ({self.dtypes[k]}); use {'/'.join(sorted(_COMPAT[self.dtypes[k]]))}"
                )
            if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
                raise InvalidInputError(
                    f"{where}.shape: a feature column is [N] or [N, 1], got {shape}"
                )
            if n is None:
                n = shape[0]
                self._rows_count(n, f"{where}.shape")
            elif shape[0] != n:
                raise InvalidInputError(f"{where}.shape: {shape[0]} rows, other inputs have {n}")
            if data and type(data[0]) is list:
                flat = []
                for j, row in enumerate(data):
                    if type(row) is not list or len(row) != 1:
                        raise InvalidInputError(f"{where}.data[{j}]: expected [value]")
                    flat.append(row[0])
                data = flat
            if len(data) != n:
                raise InvalidInputError(
                    f"{where}.data: {len(data)} values do not match shape {shape}"
                )
            if datatype in ("INT64", "INT32"):
                self._integers(data, f"{where}.data", nested=False)
            value = self._value
            cols[k] = [value(v, k, f"{where}.data[{j}]") for j, v in enumerate(data)]
        assert n is not None
        x = np.empty((n, self.n_features), dtype=self.array_dtype)
        for k, col in enumerate(cols):
            x[:, k] = col
        return x

    # ------------------------------------------------------------------ feedback
    def decode_feedback(self, body: Any) -> tuple[str, list[Any]]:
        """A feedback body ``{"id": request id, "labels": [...]}``: the id and the labels."""
        if type(body) is not dict:
            raise InvalidInputError('body: expected {"id": request id, "labels": [...]}')
        unknown = set(body) - {"id", "labels"}
        if unknown:
            raise InvalidInputError(f"body: unknown field(s) {', '.join(sorted(unknown))}")
        rid = body.get("id")
        if type(rid) is not str or not 1 <= len(rid) <= 128:
            raise InvalidInputError("id: the request id of the prediction (a string) is required")
        labels = body.get("labels")
        if type(labels) is not list or not labels:
            raise InvalidInputError("labels: a non-empty list of true labels is required")
        if len(labels) > self.max_rows:
            raise InvalidInputError(f"labels: more than {self.max_rows} labels")
        return rid, [self._label(v, i) for i, v in enumerate(labels)]

    def _label(self, v: Any, i: int) -> Any:
        label = self._typed_label(v, i)
        if self.classes is not None and label not in self.classes:
            shown = ", ".join(_show(c) for c in sorted(self.classes, key=str)[:20])
            raise InvalidInputError(
                f"labels[{i}]: {_show(label)} is not one of the model's classes ({shown})"
            )
        return label

    def _typed_label(self, v: Any, i: int) -> Any:
        kind = self.label_dtype
        t = type(v)
        if kind == "string" and t is str:
            return v
        if kind == "bool" and t is bool:
            return v
        if kind == "int64" and (t is int or (t is float and v.is_integer())):
            return int(v)
        if kind == "float64" and (t is int or t is float):
            return float(v)
        raise InvalidInputError(f"labels[{i}]: expected a {kind} label, got {_show(v)}")

    # ------------------------------------------------------------------ responses
    def v2_outputs(
        self, outputs: tuple[str, ...], labels: list[Any], proba: np.ndarray | None
    ) -> list[dict[str, Any]]:
        n = len(labels)
        out: list[dict[str, Any]] = []
        for name in outputs:
            if name == PREDICT:
                out.append(
                    {
                        "name": PREDICT,
                        "shape": [n],
                        "datatype": self.output_datatype,
                        "data": labels,
                    }
                )
            elif proba is not None:
                out.append(
                    {
                        "name": PREDICT_PROBA,
                        "shape": [n, int(proba.shape[1])],
                        "datatype": "FP64",
                        "data": proba.reshape(-1).tolist(),
                    }
                )
        return out


def _request_id(v: Any, where: str) -> str | None:
    if v is None:
        return None
    if type(v) is not str or not 1 <= len(v) <= 128 or not v.isprintable():
        raise InvalidInputError(f"{where}: expected a printable string of 1..128 characters")
    return v
