"""Artifact stores, integrity checks, safe loading and version checks (real files, no mocks)."""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import platform
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import IsolationForest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.tree import DecisionTreeClassifier

from kubeloop_runtime import api, artifacts
from kubeloop_runtime.artifacts import (
    ArtifactError,
    ArtifactIntegrityError,
    FileStore,
    UnsafeArtifactError,
    VersionMismatchError,
    VolumeStore,
)

# ------------------------------------------------------------------------------ helpers


def _frame(n: int = 120, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, size=n),
            "c": rng.choice(["red", "green", "blue"], size=n),
        }
    )
    x.loc[3, "a"] = np.nan
    y = (x["a"].fillna(0) + (x["c"] == "red") > 0.3).astype(int).to_numpy()
    return x, y


def _pipeline(estimator: Any) -> Pipeline:
    pre = ColumnTransformer(
        [
            (
                "numeric",
                Pipeline([("impute", SimpleImputer()), ("scale", StandardScaler())]),
                ["a", "b"],
            ),
            (
                "categorical",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="most_frequent")),
                        ("onehot", OneHotEncoder(handle_unknown="ignore")),
                    ]
                ),
                ["c"],
            ),
        ],
        sparse_threshold=0.0,
    )
    return Pipeline([("preprocess", pre), ("estimator", estimator)])


def _estimator(name: str) -> Any:
    path, _task = api.ESTIMATORS[name]
    module, _, cls = path.rpartition(".")
    est = getattr(importlib.import_module(module), cls)()
    params = est.get_params()
    if "n_estimators" in params:
        est.set_params(n_estimators=3)
    if "max_iter" in params and "HistGradient" in name:
        est.set_params(max_iter=5)
    return est


@pytest.fixture
def skops_model(tmp_path: Path) -> tuple[Path, str, Any]:
    x, y = _frame()
    model = _pipeline(LogisticRegression()).fit(x, y)
    path = tmp_path / "model.skops"
    sio.dump(model, path)
    return path, hashlib.sha256(path.read_bytes()).hexdigest(), model


class _Evil:
    """Unpickling this runs a shell command that creates a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


# ------------------------------------------------------------------------------ hashing


def test_sha256_file_matches_hashlib_over_several_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert artifacts.sha256_file(path) == hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------- stores


def test_file_store_put_and_resolve_round_trip(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"model bytes")
    store = artifacts.store_for((tmp_path / "out").as_uri())
    assert isinstance(store, FileStore)
    assert isinstance(store, artifacts.ArtifactStore)
    uri = store.put(src, "v1/model.skops")
    assert uri == (tmp_path / "out" / "v1" / "model.skops").as_uri()
    assert artifacts.resolve(uri).read_bytes() == b"model bytes"


def test_volume_store_maps_pvc_uris_under_the_artifact_root(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"x")
    root = tmp_path / "mnt"
    store = artifacts.store_for("pvc://kubeloop-artifacts/ml/iris-v1", artifact_root=root)
    assert isinstance(store, VolumeStore)
    uri = store.put(src, "model.skops")
    assert uri == "pvc://kubeloop-artifacts/ml/iris-v1/model.skops"
    assert (root / "ml" / "iris-v1" / "model.skops").read_bytes() == b"x"
    assert artifacts.resolve(uri, artifact_root=root) == root / "ml/iris-v1/model.skops"


def test_volume_store_defaults_to_the_api_mount_path() -> None:
    path = artifacts.resolve("pvc://claim/ml/iris/model.skops")
    assert path == Path(api.ARTIFACT_MOUNT_PATH) / "ml/iris/model.skops"


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://claim/../etc/passwd",
        "pvc://claim/ml/../../x",
        "file:///tmp/../etc/passwd",
        "file:///tmp/%2e%2e/etc/passwd",
    ],
)
def test_path_traversal_in_uris_is_rejected(uri: str) -> None:
    with pytest.raises(ArtifactError, match=r"\.\."):
        artifacts.resolve(uri, artifact_root="/srv")


@pytest.mark.parametrize("key", ["../model.skops", "a/../../b", "/abs/path", ""])
def test_path_traversal_in_keys_is_rejected(tmp_path: Path, key: str) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"")
    for store in (
        artifacts.store_for((tmp_path / "o").as_uri()),
        artifacts.store_for("pvc://c/p", artifact_root=tmp_path),
    ):
        with pytest.raises(ArtifactError):
            store.put(src, key)


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(ArtifactError) as info:
        artifacts.store_for("ftp://bucket/models/iris")
    assert "ftp://" in str(info.value)
    for scheme in ("file://", "pvc://", "s3://", "gs://", "az://"):
        assert scheme in str(info.value)


def test_file_uris_must_be_absolute_and_local() -> None:
    with pytest.raises(ArtifactError, match="local"):
        artifacts.resolve("file://remote-host/tmp/x")


def test_pvc_store_refuses_uris_of_another_claim(tmp_path: Path) -> None:
    store = artifacts.store_for("pvc://a/x", artifact_root=tmp_path)
    with pytest.raises(ArtifactError, match="claim"):
        store.resolve("pvc://b/x/model.skops")


# ------------------------------------------------------------------------- safe loading


def test_skops_model_loads_and_predicts_like_the_original(skops_model: Any) -> None:
    path, sha, model = skops_model
    loaded = artifacts.load_model(path, sha256=sha, fmt="skops")
    x, _ = _frame(seed=1)
    assert (loaded.predict(x) == model.predict(x)).all()


def test_tampered_artifact_is_refused_naming_both_digests(skops_model: Any) -> None:
    path, sha, _ = skops_model
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    with pytest.raises(ArtifactIntegrityError) as info:
        artifacts.load_model(path, sha256=sha, fmt="skops")
    assert sha in str(info.value) and actual in str(info.value)


def test_code_executing_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil(marker)))
    sha = artifacts.sha256_file(path)
    # Declared as skops: not a skops archive, refused.
    with pytest.raises(UnsafeArtifactError, match="skops"):
        artifacts.load_model(path, sha256=sha, fmt="skops")
    # Declared as joblib: refused without allow_pickle.
    with pytest.raises(UnsafeArtifactError, match="allow_pickle"):
        artifacts.load_model(path, sha256=sha, fmt="joblib")
    assert not marker.exists()


def test_pickle_marker_would_be_created_if_loaded(tmp_path: Path) -> None:
    """Guards the test above: the payload really runs code when unpickled."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(_Evil(marker)))
    artifacts.load_model(path, sha256=artifacts.sha256_file(path), fmt="joblib", allow_pickle=True)
    assert marker.exists()


def test_joblib_loads_with_allow_pickle(tmp_path: Path) -> None:
    x, y = _frame()
    model = _pipeline(DecisionTreeClassifier(random_state=0)).fit(x, y)
    path = tmp_path / "model.joblib"
    joblib.dump(model, path)
    loaded = artifacts.load_model(
        path, sha256=artifacts.sha256_file(path), fmt="joblib", allow_pickle=True
    )
    assert (loaded.predict(x) == model.predict(x)).all()


def test_skops_file_with_types_outside_our_allowlist_is_refused(tmp_path: Path) -> None:
    # skops itself trusts every scikit-learn estimator; we trust only what a
    # Kubeloop pipeline contains.
    x, _ = _frame()
    path = tmp_path / "other.skops"
    sio.dump(IsolationForest(n_estimators=2, random_state=0).fit(x[["a", "b"]].fillna(0)), path)
    with pytest.raises(UnsafeArtifactError, match="IsolationForest"):
        artifacts.load_model(path, sha256=artifacts.sha256_file(path), fmt="skops")


@pytest.mark.parametrize("name", sorted(api.ESTIMATORS))
def test_every_allowlisted_estimator_round_trips_through_skops(tmp_path: Path, name: str) -> None:
    x, y = _frame()
    task = api.ESTIMATORS[name][1]
    target = y if task is api.Task.CLASSIFICATION else x["a"].fillna(0).to_numpy() * 2.0
    model = _pipeline(_estimator(name)).fit(x, target)
    path = tmp_path / "m.skops"
    sio.dump(model, path)
    loaded = artifacts.load_model(path, sha256=artifacts.sha256_file(path), fmt="skops")
    np.testing.assert_allclose(loaded.predict(x), model.predict(x))


def test_unknown_format_is_refused(skops_model: Any) -> None:
    path, sha, _ = skops_model
    with pytest.raises(UnsafeArtifactError):
        artifacts.load_model(path, sha256=sha, fmt="pickle")  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- versions


def _recorded(**changes: str) -> api.FrameworkInfo:
    return artifacts.running_framework().model_copy(update=changes)


def test_same_versions_pass() -> None:
    artifacts.check_versions(_recorded())
    assert artifacts.running_framework().python == platform.python_version()


def test_sklearn_patch_difference_is_refused_with_both_versions() -> None:
    major, minor, *_ = sklearn.__version__.split(".")
    other = f"{major}.{minor}.999"
    with pytest.raises(VersionMismatchError) as info:
        artifacts.check_versions(_recorded(sklearn=other))
    assert other in str(info.value) and sklearn.__version__ in str(info.value)


def test_numpy_major_difference_is_refused_but_minor_is_not() -> None:
    major = int(np.__version__.split(".")[0])
    artifacts.check_versions(_recorded(numpy=f"{major}.0.0"))
    with pytest.raises(VersionMismatchError, match="numpy"):
        artifacts.check_versions(_recorded(numpy=f"{major + 1}.0.0"))


def test_python_minor_difference_is_refused() -> None:
    major, minor, _ = platform.python_version_tuple()
    with pytest.raises(VersionMismatchError, match="python"):
        artifacts.check_versions(_recorded(python=f"{major}.{int(minor) + 1}.0"))
