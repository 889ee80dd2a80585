"""Where a run writes: light (no scikit-learn), so the CLI opens it before anything else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubeloop_runtime import artifacts


@dataclass(frozen=True)
class Output:
    """Where a run writes: a store rooted at the output URI, and its local directory."""

    store: artifacts.ArtifactStore
    directory: Path

    @classmethod
    def open(cls, output: str, artifact_root: Path | None = None) -> Output:
        """``output`` is a URI (``file://``, ``pvc://``) or a plain directory."""
        uri = output if "://" in output else Path(output).expanduser().resolve().as_uri()
        store = artifacts.store_for(uri, artifact_root)
        directory = store.resolve(store.base_uri)
        directory.mkdir(parents=True, exist_ok=True)
        return cls(store=store, directory=directory)

    def publish(self, name: str) -> tuple[str, str, int]:
        """Store the file written as ``directory/name``: (uri, sha256, size)."""
        local = self.directory / name
        return self.store.put(local, name), artifacts.sha256_file(local), local.stat().st_size
