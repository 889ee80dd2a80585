"""Loading a dataset, fingerprinting it, and checking its columns against the spec.

Files and URLs are hashed over their raw bytes (the fingerprint of what was read);
builtin datasets over a canonical serialisation of the frame. Large files are hashed by
streaming and then parsed by pandas from the path, so the raw bytes are never held in
memory next to the parsed frame.
"""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal
from urllib.parse import urlsplit

import pandas as pd
import sklearn.datasets

from kubeloop_runtime import api, storage
from kubeloop_runtime.artifacts import sha256_file
from kubeloop_runtime.train.errors import DataError, InvalidSpecError, StorageAccessError

log = logging.getLogger(__name__)

BUILTIN_TARGET = "target"
URL_TIMEOUT_SECONDS = 120
_MAX_LISTED = 20


@dataclass(frozen=True)
class Loaded:
    """A dataset as read, with its fingerprint."""

    frame: pd.DataFrame
    sha256: str
    source: str

    def info(self) -> api.DatasetInfo:
        rows, columns = self.frame.shape
        return api.DatasetInfo(
            sha256=self.sha256, rows=int(rows), columns=int(columns), source=self.source[:2048]
        )


@dataclass(frozen=True)
class Columns:
    """The roles of the dataset's columns, after validation."""

    target: str
    features: list[str]
    numeric: list[str]
    categorical: list[str]


def _format_of(name: str, given: str | None) -> Literal["csv", "parquet"]:
    if given == "parquet" or (given is None and name.lower().endswith((".parquet", ".pq"))):
        return "parquet"
    return "csv"


def _parse(source: str | io.BytesIO, fmt: Literal["csv", "parquet"], what: str) -> pd.DataFrame:
    try:
        if fmt == "parquet":
            return pd.read_parquet(source)
        return pd.read_csv(source)
    except pd.errors.EmptyDataError as e:
        raise DataError(f"dataset {what} is empty (no header and no rows)") from e
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise DataError(f"dataset {what} could not be read as {fmt}: {e}") from e


def _load_file(path: Path, fmt: str | None, source: str) -> Loaded:
    if not path.is_file():
        raise DataError(f"dataset file {str(path)!r} not found")
    if path.stat().st_size == 0:
        raise DataError(f"dataset file {str(path)!r} is empty")
    digest = sha256_file(path)
    frame = _parse(str(path), _format_of(path.name, fmt), repr(str(path)))
    return Loaded(frame=frame, sha256=digest, source=source)


def _load_url(url: str, fmt: str | None) -> Loaded:
    log.info("Downloading dataset %s", url)
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_SECONDS) as response:
            raw: bytes = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as e:
        raise DataError(f"dataset url {url!r} could not be fetched: {e}") from e
    if not raw:
        raise DataError(f"dataset url {url!r} is empty")
    digest = hashlib.sha256(raw).hexdigest()
    buffer = io.BytesIO(raw)
    del raw  # the buffer holds the only reference; freed once parsed
    frame = _parse(buffer, _format_of(PurePosixPath(urlsplit(url).path).name, fmt), repr(url))
    buffer.close()
    return Loaded(frame=frame, sha256=digest, source=url)


_DATA_SUFFIXES = (".csv", ".parquet", ".pq")


def _load_object(uri: str, fmt: str | None) -> Loaded:
    """One object, or every .csv/.parquet object under a prefix (a URI ending in ``/``).

    Each object is streamed to a temporary file (hashed as it streams), parsed from there
    and deleted. A prefix's objects are read in key order and concatenated; the
    fingerprint is then the sha256 of their URIs and digests.
    """
    field = "spec.dataset.uri"
    try:
        if uri.endswith("/"):
            wanted = (
                (".parquet", ".pq") if fmt == "parquet" else (".csv",) if fmt else _DATA_SUFFIXES
            )
            objects = [o for o in storage.list_prefix(uri) if o.uri.lower().endswith(wanted)]
            if not objects:
                raise StorageAccessError(
                    field,
                    storage.StorageError(
                        f"no {' or '.join(wanted)} objects under {uri}", "NoSuchKey"
                    ),
                )
        else:
            objects = [storage.ObjectInfo(uri=uri, size=0, etag="")]
        frames: list[pd.DataFrame] = []
        digests: list[str] = []
        with tempfile.TemporaryDirectory(prefix="kubeloop-dataset-") as tmp:
            for i, obj in enumerate(objects):
                name = PurePosixPath(urlsplit(obj.uri).path).name
                local = Path(tmp) / f"{i}-{name}"
                sha, size = storage.download(obj.uri, local)
                if size == 0:
                    raise DataError(f"{field}: object {obj.uri} is empty")
                frames.append(_parse(str(local), _format_of(name, fmt), repr(obj.uri)))
                digests.append(sha)
                local.unlink()
    except storage.StorageError as e:
        raise StorageAccessError(field, e) from e
    if len(frames) == 1:
        return Loaded(frame=frames[0], sha256=digests[0], source=uri)
    columns = [list(f.columns) for f in frames]
    if any(c != columns[0] for c in columns):
        odd = next(o.uri for o, c in zip(objects, columns, strict=True) if c != columns[0])
        raise DataError(f"{field}: {odd} has other columns than {objects[0].uri}")
    combined = hashlib.sha256()
    for obj, sha in zip(objects, digests, strict=True):
        combined.update(f"{obj.uri}\x1f{sha}\x1e".encode())
    frame = pd.concat(frames, ignore_index=True)
    return Loaded(frame=frame, sha256=combined.hexdigest(), source=uri)


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """A canonical sha256 of a frame: column names, dtypes, then pandas' row hashes."""
    digest = hashlib.sha256()
    for name, dtype in frame.dtypes.items():
        digest.update(f"{name}\x1f{dtype}\x1e".encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _load_builtin(name: str) -> Loaded:
    loader = getattr(sklearn.datasets, f"load_{name}")
    frame: pd.DataFrame = loader(as_frame=True).frame
    return Loaded(frame=frame, sha256=frame_fingerprint(frame), source=f"builtin:{name}")


def load_dataset(spec: api.DatasetSpec, data_root: Path) -> Loaded:
    """Read the one source the spec names. ConfigMap and PVC sources are mounted files."""
    if spec.builtin is not None:
        return _load_builtin(spec.builtin)
    if spec.url is not None:
        return _load_url(spec.url, spec.format)
    if spec.uri is not None:
        return _load_object(spec.uri, spec.format)
    if spec.config_map is not None:
        cm = spec.config_map
        return _load_file(
            data_root / "configmap" / cm.key, spec.format, f"configmap:{cm.name}/{cm.key}"
        )
    if spec.pvc is not None:
        pvc = spec.pvc
        return _load_file(
            data_root / "pvc" / pvc.path, spec.format, f"pvc:{pvc.claim_name}/{pvc.path}"
        )
    if spec.path is not None:
        path = Path(spec.path).expanduser().resolve()
        return _load_file(path, spec.format, f"file:{path}")
    raise InvalidSpecError("spec.dataset: no source given")  # the spec model forbids this


def _listing(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def validate_columns(frame: pd.DataFrame, spec: api.TrainingJobSpec) -> Columns:
    """Check that the frame has what the spec names; every error names the column."""
    ds = spec.dataset
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise DataError(f"dataset has duplicate column names: {_listing(dupes)}")
    target = ds.target or BUILTIN_TARGET
    if target not in columns:
        raise DataError(
            f"target column {target!r} (spec.dataset.target) not found in the dataset;"
            f" columns are {_listing(columns)}"
        )
    if ds.features is not None:
        features = list(ds.features)
        missing = [c for c in features if c not in columns]
        if missing:
            raise DataError(
                f"feature column {missing[0]!r} (spec.dataset.features) not found in the"
                f" dataset; missing: {_listing(missing)}; columns are {_listing(columns)}"
            )
        if target in features:
            raise InvalidSpecError(
                f"spec.dataset.features: the target column {target!r} cannot also be a feature"
            )
        if len(set(features)) != len(features):
            raise InvalidSpecError("spec.dataset.features: column names must be unique")
    else:
        features = [c for c in columns if c != target]
    if not features:
        raise DataError(f"dataset has no feature columns besides the target {target!r}")
    if len(frame) == 0:
        raise DataError("dataset has a header but no rows")

    categorical = list(dict.fromkeys(spec.preprocessing.categorical))
    stray = [c for c in categorical if c not in features]
    if stray:
        raise DataError(
            f"categorical column {stray[0]!r} (spec.preprocessing.categorical) is not among"
            f" the features; features are {_listing(features)}"
        )
    chosen = set(categorical)
    numeric: list[str] = []
    for name in features:
        if name in chosen:
            continue
        series = frame[name]
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            numeric.append(name)
            continue
        example = series.dropna().iloc[0] if series.notna().any() else None
        raise DataError(
            f"column {name!r} is not numeric (dtype {series.dtype}, e.g. {example!r}):"
            " list it in spec.preprocessing.categorical to one-hot encode it,"
            " or leave it out of spec.dataset.features"
        )

    y = frame[target]
    missing_target = int(y.isna().sum())
    if missing_target:
        raise DataError(f"target column {target!r} has {missing_target} missing values")
    if spec.estimator.task is api.Task.REGRESSION:
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise DataError(
                f"target column {target!r} must be numeric for regression"
                f" ({spec.estimator.type}), got dtype {y.dtype}"
            )
    elif y.nunique() < 2:
        raise DataError(
            f"target column {target!r} has a single class; classification needs at least two"
        )
    return Columns(target=target, features=features, numeric=numeric, categorical=categorical)
