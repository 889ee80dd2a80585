"""Where a run writes: light (no scikit-learn), so the CLI opens it before anything else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubeloop_runtime import artifacts, storage
from kubeloop_runtime.train.errors import StorageAccessError

# The operator passes spec.artifact.uri (under <namespace>/<name>) as --output.
OUTPUT_FIELD = "spec.artifact.uri (--output)"


@dataclass(frozen=True)
class Output:
    """Where a run writes: a store rooted at the output URI, and its local directory.

    For a directory or the artifact volume, files are written in place; for an object
    store, into a local staging directory, and each :meth:`publish` uploads one.
    """

    store: artifacts.ArtifactStore
    directory: Path

    @classmethod
    def open(cls, output: str, artifact_root: Path | None = None) -> Output:
        """``output`` is a URI (``file://``, ``pvc://``, ``s3://``...) or a directory."""
        uri = output if "://" in output else Path(output).expanduser().resolve().as_uri()
        store = artifacts.store_for(uri, artifact_root)
        directory = store.workdir()
        directory.mkdir(parents=True, exist_ok=True)
        return cls(store=store, directory=directory)

    def check(self) -> None:
        """Fail before training when an object store's bucket or credentials are wrong."""
        if isinstance(self.store, storage.ObjectStore):
            try:
                self.store.probe()
            except storage.StorageError as e:
                raise StorageAccessError(OUTPUT_FIELD, e) from e

    def publish(self, name: str) -> tuple[str, str, int]:
        """Store the file written as ``directory/name``: (uri, sha256, size)."""
        local = self.directory / name
        digest, size = artifacts.sha256_file(local), local.stat().st_size
        try:
            return self.store.put(local, name), digest, size
        except storage.StorageError as e:
            raise StorageAccessError(OUTPUT_FIELD, e) from e
