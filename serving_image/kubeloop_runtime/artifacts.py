"""Model artifacts: where they live, how they are verified, how they are loaded safely.

Three concerns, each small:

* **Stores.** An artifact is named by a URI. ``file:///abs/dir/model.skops`` is a local
  file; ``pvc://<claim>/<relative/path>`` is a file on the artifact PersistentVolumeClaim,
  which the operator mounts at :data:`kubeloop_runtime.api.ARTIFACT_MOUNT_PATH` in both
  training and serving pods. :func:`store_for` picks the store for a URI's scheme from
  :data:`_STORES`; adding an object store (``s3://``) means one more class implementing
  :class:`ArtifactStore` and one more entry there, callers do not change.
* **Integrity.** :func:`load_model` checks the file's sha256 against the one recorded at
  training time *before* a single byte is deserialised.
* **Safety.** skops files are loaded only when every type they name is in our explicit
  allowlist (:func:`trusted_types`); pickle (joblib) runs code on load and is refused
  unless the caller opts in with ``allow_pickle=True``.

Importing this module is cheap: scikit-learn, skops and joblib are imported on first use, so
``kubeloop-train`` can reject a bad spec, and tools can resolve URIs, without loading them.

Size (~470 lines): the three concerns above share the URI and the error types; each is
one section of this module.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import platform
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from kubeloop_runtime import api

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ArtifactError(Exception):
    """An artifact URI or file cannot be used."""


class ArtifactIntegrityError(ArtifactError):
    """The file's sha256 is not the one recorded when it was written."""


class UnsafeArtifactError(ArtifactError):
    """Loading the file could run code, or it names types outside the allowlist."""


class VersionMismatchError(ArtifactError):
    """The running libraries differ from those the model was trained with."""


# ------------------------------------------------------------------------------ hashing


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks (constant memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(actual: str, expected: str, what: str) -> None:
    """Raise :class:`ArtifactIntegrityError` unless the digest of ``what`` is ``expected``."""
    if actual != expected.lower():
        raise ArtifactIntegrityError(
            f"sha256 of {what} is {actual}, expected {expected}; the file was modified or corrupted"
        )


# ------------------------------------------------------------------------------- stores


def _safe_relative(key: str, *, what: str) -> PurePosixPath:
    """A relative POSIX path with no ``..``, no empty and no absolute parts."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ArtifactError(f"{what} must be a relative path, got {key!r}")
    parts = [p for p in key.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise ArtifactError(f"{what} must not contain '..' or be empty, got {key!r}")
    return PurePosixPath(*parts)


def _place(local: Path, dest: Path) -> None:
    """Copy ``local`` to ``dest`` atomically (write a temporary file, then rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() and os.path.samefile(local, dest):
        return
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(local, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@runtime_checkable
class ArtifactStore(Protocol):
    """A place for artifacts, rooted at a base URI (a "directory")."""

    @property
    def base_uri(self) -> str:
        """The URI of the store's root, without a trailing slash."""
        ...

    def uri_for(self, key: str) -> str:
        """The URI that ``key`` (a relative path) has in this store."""
        ...

    def put(self, local: Path, key: str) -> str:
        """Store the local file under ``key`` and return its URI."""
        ...

    def resolve(self, uri: str) -> Path:
        """A local, readable path for ``uri`` (which must belong to this scheme)."""
        ...

    def workdir(self) -> Path:
        """The local directory a run writes its files into before :meth:`put`."""
        ...


class FileStore:
    """``file:///abs/dir`` URIs: plain local files."""

    scheme = "file"

    def __init__(self, root: Path) -> None:
        if not root.is_absolute():
            raise ArtifactError(f"file store root must be absolute, got {str(root)!r}")
        self.root = root

    @classmethod
    def from_uri(cls, uri: str, artifact_root: Path | None = None) -> FileStore:
        del artifact_root  # file URIs are absolute already
        return cls(cls._path_of(uri))

    @staticmethod
    def _path_of(uri: str) -> Path:
        parts = urlsplit(uri)
        if parts.scheme != "file":
            raise ArtifactError(f"not a file:// URI: {uri!r}")
        if parts.netloc not in ("", "localhost"):
            raise ArtifactError(f"file:// URIs must be local (no host), got {uri!r}")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ArtifactError(f"file:// URIs must hold an absolute path, got {uri!r}")
        if ".." in path.split("/"):
            raise ArtifactError(f"artifact URI must not contain '..': {uri!r}")
        return Path(path)

    @property
    def base_uri(self) -> str:
        return self.root.as_uri().rstrip("/")

    def uri_for(self, key: str) -> str:
        rel = _safe_relative(key, what="artifact key")
        return (self.root / rel).as_uri()

    def put(self, local: Path, key: str) -> str:
        rel = _safe_relative(key, what="artifact key")
        _place(local, self.root / rel)
        return self.uri_for(key)

    def resolve(self, uri: str) -> Path:
        return self._path_of(uri)

    def workdir(self) -> Path:
        return self.root


class VolumeStore:
    """``pvc://<claim>/<relative/path>``: files on the artifact PVC, mounted at a root."""

    scheme = "pvc"

    def __init__(self, claim: str, prefix: str, artifact_root: Path | None = None) -> None:
        if not claim:
            raise ArtifactError("pvc:// URIs need a claim name: pvc://<claim>/<path>")
        self.claim = claim
        self.prefix = _safe_relative(prefix, what="pvc path") if prefix else PurePosixPath()
        self.artifact_root = Path(artifact_root or api.ARTIFACT_MOUNT_PATH)

    @classmethod
    def from_uri(cls, uri: str, artifact_root: Path | None = None) -> VolumeStore:
        claim, rel = cls._split(uri)
        return cls(claim, rel, artifact_root)

    @staticmethod
    def _split(uri: str) -> tuple[str, str]:
        parts = urlsplit(uri)
        if parts.scheme != "pvc":
            raise ArtifactError(f"not a pvc:// URI: {uri!r}")
        if parts.query or parts.fragment:
            raise ArtifactError(f"pvc:// URIs take no query or fragment: {uri!r}")
        path = unquote(parts.path).strip("/")
        if ".." in path.split("/"):
            raise ArtifactError(f"artifact URI must not contain '..': {uri!r}")
        return parts.netloc, path

    @property
    def base_uri(self) -> str:
        tail = f"/{self.prefix}" if self.prefix.parts else ""
        return f"pvc://{self.claim}{tail}"

    def _key_path(self, key: str) -> PurePosixPath:
        return self.prefix / _safe_relative(key, what="artifact key")

    def uri_for(self, key: str) -> str:
        return f"pvc://{self.claim}/{self._key_path(key)}"

    def put(self, local: Path, key: str) -> str:
        _place(local, self.artifact_root / self._key_path(key))
        return self.uri_for(key)

    def resolve(self, uri: str) -> Path:
        claim, rel = self._split(uri)
        if claim != self.claim:
            raise ArtifactError(
                f"artifact {uri!r} is on claim {claim!r} but this store holds {self.claim!r}"
            )
        if not rel:
            return self.artifact_root
        return self.artifact_root / _safe_relative(rel, what="pvc path")

    def workdir(self) -> Path:
        return self.resolve(self.base_uri)


def _object_store(uri: str, artifact_root: Path | None) -> ArtifactStore:
    from kubeloop_runtime.storage import ObjectStore  # noqa: PLC0415  (imports this module)

    return ObjectStore.from_uri(uri, artifact_root)


_STORES: dict[str, Callable[[str, Path | None], ArtifactStore]] = {
    "file": FileStore.from_uri,
    "pvc": VolumeStore.from_uri,
    "s3": _object_store,
    "gs": _object_store,
    "az": _object_store,
}


def supported_schemes() -> list[str]:
    return sorted(_STORES)


def store_for(uri: str, artifact_root: str | os.PathLike[str] | None = None) -> ArtifactStore:
    """The store rooted at ``uri``, chosen by its scheme."""
    scheme = urlsplit(uri).scheme
    factory = _STORES.get(scheme)
    if factory is None:
        supported = ", ".join(f"{s}://" for s in supported_schemes())
        raise ArtifactError(
            f"unsupported artifact URI scheme {scheme + '://' if scheme else '(none)'}"
            f" in {uri!r}; supported: {supported}"
        )
    return factory(uri, Path(artifact_root) if artifact_root is not None else None)


def resolve(uri: str, artifact_root: str | os.PathLike[str] | None = None) -> Path:
    """The local path of an artifact URI."""
    return store_for(uri, artifact_root).resolve(uri)


# ------------------------------------------------------------------------ safe loading

# Types a model file may name, besides the estimators of api.ESTIMATORS (added by class
# so the names follow scikit-learn's module layout). Everything here is data or a
# scikit-learn building block that a Kubeloop pipeline produces; nothing runs code
# chosen by the file on load.
_TRUSTED_NAMES = (
    # builtins
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool", "builtins.slice", "builtins.NoneType",
    "builtins.set", "builtins.frozenset", "builtins.bytes",
    # numpy data
    "numpy.dtype", "numpy.ndarray", "numpy.float64", "numpy.float32", "numpy.int64",
    "numpy.int32", "numpy.int16", "numpy.int8", "numpy.uint64", "numpy.uint32",
    "numpy.uint16", "numpy.uint8", "numpy.bool_", "numpy.bool", "numpy.str_", "numpy.bytes_",
    "numpy.object_", "numpy.intp",
    "numpy.random.mtrand.RandomState", "numpy.random._generator.Generator",
    "numpy.random._mt19937.MT19937", "numpy.random._pcg64.PCG64",
    # scikit-learn internals of the allowlisted estimators
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss.loss.HalfSquaredError", "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.PinballLoss", "sklearn._loss.loss.HuberLoss",
    "sklearn._loss.loss.HalfPoissonLoss", "sklearn._loss.loss.ExponentialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfSquaredError", "sklearn._loss._loss.CyAbsoluteError",
    "sklearn._loss._loss.CyPinballLoss", "sklearn._loss._loss.CyHuberLoss",
    "sklearn._loss._loss.CyHalfPoissonLoss", "sklearn._loss._loss.CyExponentialLoss",
    "sklearn._loss.link.IdentityLink", "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.LogLink", "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.Interval",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.ChebyshevDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neighbors._kd_tree.KDTree", "sklearn.neighbors._ball_tree.BallTree",
)  # fmt: skip

# Public classes, resolved to their defining module at run time.
_TRUSTED_CLASSES = (
    "sklearn.pipeline.Pipeline",
    "sklearn.compose.ColumnTransformer",
    "sklearn.impute.SimpleImputer",
    "sklearn.preprocessing.StandardScaler",
    "sklearn.preprocessing.MinMaxScaler",
    "sklearn.preprocessing.RobustScaler",
    "sklearn.preprocessing.OneHotEncoder",
    "sklearn.preprocessing.LabelEncoder",
    "sklearn.dummy.DummyClassifier",
    "sklearn.dummy.DummyRegressor",
    "sklearn.tree.DecisionTreeClassifier",
    "sklearn.tree.DecisionTreeRegressor",
    "sklearn.neighbors.KDTree",
    "sklearn.neighbors.BallTree",
)
# XGBoost's and LightGBM's scikit-learn estimators and the boosters inside them, by their
# defining module (tests/unit/test_boosters.py checks these against the classes). Named,
# not imported: importing the two libraries costs seconds at every load. A booster's state
# is the library's own model format (XGBoost's UBJSON raw model, LightGBM's text model),
# which its __setstate__ parses; skops stores it as bytes or a string, never a pickle.
BOOSTER_TYPES = (
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor",
    "xgboost.core.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "lightgbm.basic.Booster",
    "collections.OrderedDict",
    "collections.defaultdict",
    "builtins.bytearray",
)
_BOOSTER_PACKAGES = ("xgboost.", "lightgbm.")


def _import_class(dotted: str) -> type[Any]:
    module, _, name = dotted.rpartition(".")
    cls: type[Any] = getattr(importlib.import_module(module), name)
    return cls


@cache
def trusted_types() -> frozenset[str]:
    """The fully qualified type names a skops model file may contain."""
    names = set(_TRUSTED_NAMES) | set(BOOSTER_TYPES)
    for dotted in (*_TRUSTED_CLASSES, *(path for path, _ in api.ESTIMATORS.values())):
        if dotted.startswith(_BOOSTER_PACKAGES):
            continue
        cls = _import_class(dotted)
        names.add(f"{cls.__module__}.{cls.__qualname__}")
    return frozenset(names)


def _schema_types(path: Path) -> set[str]:
    """Every type named anywhere in a skops file's schema (our own audit)."""
    try:
        with zipfile.ZipFile(path) as archive:
            schema = json.loads(archive.read("schema.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise UnsafeArtifactError(
            f"{path} is not a skops archive (no readable schema.json); refusing to load it"
        ) from e
    found: set[str] = set()
    stack: list[Any] = [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            module, cls = item.get("__module__"), item.get("__class__")
            if isinstance(module, str) and isinstance(cls, str):
                found.add(f"{module}.{cls}")
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _load_skops(path: Path) -> Any:
    import skops.io as sio  # noqa: PLC0415  (see the module docstring)

    allowed = trusted_types()
    named = _schema_types(path)
    untrusted = set(sio.get_untrusted_types(file=path))
    outside = sorted((named | untrusted) - allowed)
    if outside:
        raise UnsafeArtifactError(
            f"{path} names types outside the Kubeloop allowlist: {', '.join(outside)}"
        )
    return sio.load(path, trusted=sorted(untrusted))


def load_model(
    path: str | os.PathLike[str],
    *,
    sha256: str,
    fmt: Literal["skops", "joblib"],
    allow_pickle: bool = False,
) -> Any:
    """Verify ``path`` against ``sha256``, then deserialise it safely.

    Raises :class:`ArtifactIntegrityError` if the digest differs (nothing is read past
    hashing), :class:`UnsafeArtifactError` if loading could run untrusted code.
    """
    file = Path(path)
    verify_sha256(sha256_file(file), sha256, str(file))
    if fmt == "skops":
        return _load_skops(file)
    if fmt == "joblib":
        if not allow_pickle:
            raise UnsafeArtifactError(
                f"{file} is a joblib (pickle) artifact, which can run arbitrary code on load;"
                " it is loaded only with allow_pickle=True"
            )
        import joblib  # noqa: PLC0415

        log.warning("Loading pickle artifact %s (allow_pickle=True)", file)
        return joblib.load(file)
    raise UnsafeArtifactError(f"unknown artifact format {fmt!r}; expected skops or joblib")


# --------------------------------------------------------------------------- versions


def running_framework() -> api.FrameworkInfo:
    """The versions of the libraries in this process."""
    import numpy  # noqa: PLC0415
    import pandas  # noqa: PLC0415
    import sklearn  # noqa: PLC0415

    return api.FrameworkInfo(
        python=platform.python_version(),
        sklearn=sklearn.__version__,
        numpy=numpy.__version__,
        pandas=pandas.__version__,
    )


def _parts(version: str, n: int) -> tuple[str, ...]:
    return tuple(version.split("+", maxsplit=1)[0].split(".")[:n])


def check_versions(framework: api.FrameworkInfo) -> None:
    """Refuse a model trained with other scikit-learn, numpy major or Python minor versions."""
    running = running_framework()
    problems = []
    if _parts(running.sklearn, 3) != _parts(framework.sklearn, 3):
        problems.append(f"scikit-learn: model {framework.sklearn}, running {running.sklearn}")
    if _parts(running.numpy, 1) != _parts(framework.numpy, 1):
        problems.append(f"numpy (major): model {framework.numpy}, running {running.numpy}")
    if _parts(running.python, 2) != _parts(framework.python, 2):
        problems.append(f"python (minor): model {framework.python}, running {running.python}")
    if problems:
        raise VersionMismatchError(
            "model was trained with different library versions: " + "; ".join(problems)
        )
