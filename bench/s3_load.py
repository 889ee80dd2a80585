"""A large model loaded from s3:// next to the same file from a volume: time and peak memory.

Trains a RandomForestClassifier whose skops file is at least --min-mb (default 200) MB,
puts it on a local directory (what a pod sees on the artifact PVC) and in a real S3 server
(versitygw on loopback, as the tests start it), then alternately loads it, each load in
its own subprocess, the way ``kubeloop-serve`` does (``artifacts.resolve`` then
``artifacts.load_model``: sha256 checked before anything is deserialised):

  volume   file:///.../model.skops: hash, then skops load;
  s3       s3://bench/model.skops: streamed to the pod's scratch in 8 MiB chunks, then
           hash and skops load of that file.

Wall time and peak RSS (os.wait4's ru_maxrss of the child) are taken per run; medians of
--repeats runs are printed with their ratios. The s3 path must not hold the artifact twice
in memory: its peak RSS stays within --max-memory-ratio (default 1.10) of the volume's.

    python bench/s3_load.py [--min-mb 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LOAD = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    from kubeloop_runtime import artifacts
    uri, sha = sys.argv[1], sys.argv[2]
    path = artifacts.resolve(uri)
    fetched = time.perf_counter()
    model = artifacts.load_model(path, sha256=sha, fmt="skops")
    done = time.perf_counter()
    print(json.dumps({"fetch_s": fetched - t0, "total_s": done - t0,
                      "trees": len(model.named_steps["estimator"].estimators_)}))
    """
)


def make_model(directory: Path, min_mb: int) -> Path:
    import numpy as np  # noqa: PLC0415  (the parent process only)
    import skops.io as sio  # noqa: PLC0415
    from sklearn.ensemble import RandomForestClassifier  # noqa: PLC0415
    from sklearn.pipeline import Pipeline  # noqa: PLC0415

    rng = np.random.default_rng(0)
    rows = 200_000
    x = rng.normal(size=(rows, 10))
    y = rng.integers(0, 3, size=rows)  # noise: trees grow to full depth, large files
    trees = 4
    while True:
        forest = RandomForestClassifier(n_estimators=trees, n_jobs=1, random_state=0)
        model = Pipeline([("estimator", forest)]).fit(x, y)
        path = directory / "model.skops"
        sio.dump(model, path)
        size_mb = path.stat().st_size / 1e6
        if size_mb >= min_mb:
            return path
        trees = int(trees * min_mb / size_mb) + 1


def run_load(uri: str, sha: str, env: dict[str, str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", LOAD, uri, sha], env=env, stdout=subprocess.PIPE, text=True
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    assert proc.stdout is not None
    out = json.loads(proc.stdout.read())
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"load of {uri} failed")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024, **out}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--min-mb", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-memory-ratio", type=float, default=1.10)
    args = p.parse_args()

    from tests.s3server import S3Server  # noqa: PLC0415  (after sys.path has the repo)

    from kubeloop_runtime import artifacts, storage  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="kubeloop-s3-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        model = make_model(root, args.min_mb)
        size_mb = model.stat().st_size / 1e6
        sha = artifacts.sha256_file(model)
        print(f"model: {size_mb:.0f} MB skops, built in {time.perf_counter() - t0:.0f}s")
        server = S3Server(root / "s3").start()
        try:
            bucket = server.make_bucket("bench")
            t0 = time.perf_counter()
            storage.upload(model, f"{bucket}/model.skops", env=server.env)
            print(f"upload: {time.perf_counter() - t0:.1f}s (multipart, streamed from the file)")
            base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
            runs: dict[str, list[dict[str, float]]] = {"volume": [], "s3": []}
            for _ in range(args.repeats):
                runs["volume"].append(run_load(model.as_uri(), sha, base))
                cache = root / "pod-scratch"
                env = {**base, **server.env, "KUBELOOP_OBJECT_CACHE": str(cache)}
                runs["s3"].append(run_load(f"{bucket}/model.skops", sha, env))
        finally:
            server.stop()

    med = {
        mode: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for mode, rs in runs.items()
    }
    print(f"\n{'':8} {'wall s':>8} {'fetch s':>8} {'peak RSS MB':>12}")
    for mode in ("volume", "s3"):
        m = med[mode]
        print(f"{mode:8} {m['wall_s']:8.2f} {m['fetch_s']:8.2f} {m['peak_rss_mb']:12.0f}")
    time_ratio = med["s3"]["wall_s"] / med["volume"]["wall_s"]
    mem_ratio = med["s3"]["peak_rss_mb"] / med["volume"]["peak_rss_mb"]
    print(f"\ns3 / volume: time {time_ratio:.2f}x, peak memory {mem_ratio:.2f}x"
          f" (artifact {size_mb:.0f} MB; median of {args.repeats})")  # fmt: skip
    if mem_ratio > args.max_memory_ratio:
        print(f"FAIL: peak memory ratio {mem_ratio:.2f} > {args.max_memory_ratio}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
