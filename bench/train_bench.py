"""How much does kubeloop-train cost over a bare scikit-learn script doing the same work?

Generates a synthetic CSV (default 1,000,000 rows: 8 numeric features with missing values,
1 categorical feature, a binary label) in a temporary directory, then alternately runs,
each as its own subprocess:

  bare   python: pandas.read_csv, the same train/test split, the same Pipeline
         (impute + one-hot + HistGradientBoostingClassifier), fit, the same held-out
         metrics, skops dump of the model;
  ours   kubeloop-train with the equivalent spec (ONNX export off: the bare script has no
         equivalent), which additionally hashes the file, validates columns, writes the
         drift reference, holdout.csv and result.json.

Wall time and peak RSS (os.wait4's ru_maxrss of that child) are taken per run; the median
of --repeats runs is compared. Exits 1 if kubeloop-train is more than --max-overhead
(default 15%) slower or bigger.

    python bench/train_bench.py [--rows 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

MAX_ITER = 50
# One OpenMP thread for both: on a shared 2-core machine, OpenMP's spinning threads make
# timings depend on the neighbours' load far more than on the code being measured.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

BARE = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd, skops.io as sio
    from sklearn import metrics as skm
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    csv, out = sys.argv[1], sys.argv[2]
    frame = pd.read_csv(csv)
    numeric = [c for c in frame.columns if c.startswith("f")]
    x, y = frame[numeric + ["region"]], frame["label"]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=42, stratify=y)
    del frame, x, y
    pre = ColumnTransformer([
        ("numeric", Pipeline([("impute", SimpleImputer(strategy="mean"))]), numeric),
        ("categorical", Pipeline([("impute", SimpleImputer(strategy="most_frequent")),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore"))]),
         ["region"]),
    ], sparse_threshold=0.0, verbose_feature_names_out=False)
    model = Pipeline([("preprocess", pre), ("estimator",
        HistGradientBoostingClassifier(max_iter=%(max_iter)d, random_state=42))])
    model.fit(x_train, y_train)
    pred = model.predict(x_test)
    proba = model.predict_proba(x_test)
    print({
        "accuracy": skm.accuracy_score(y_test, pred),
        "f1": skm.f1_score(y_test, pred, average="macro"),
        "precision": skm.precision_score(y_test, pred, average="macro"),
        "recall": skm.recall_score(y_test, pred, average="macro"),
        "roc_auc": skm.roc_auc_score(y_test == model.classes_[1], proba[:, 1]),
        "log_loss": skm.log_loss(y_test, proba, labels=model.classes_),
    }, file=sys.stderr)
    sio.dump(model, out + "/model.skops")
    """
) % {"max_iter": MAX_ITER}


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 8))
    weights = rng.normal(size=8)
    region = rng.choice(["north", "south", "east", "west", "center"], size=rows)
    score = features @ weights + (region == "north") * 1.5 + rng.normal(scale=1.0, size=rows)
    frame = pd.DataFrame(features, columns=[f"f{i}" for i in range(8)])
    frame["region"] = region
    frame["label"] = (score > 0).astype(np.int64)
    holes = rng.random(rows) < 0.02
    frame.loc[holes, "f0"] = np.nan
    frame.to_csv(path, index=False, float_format="%.6g")


def spec(csv: Path) -> dict[str, object]:
    return {
        "model": "bench",
        "dataset": {"path": str(csv), "target": "label"},
        "estimator": {
            "type": "HistGradientBoostingClassifier",
            "hyperparameters": {"max_iter": MAX_ITER},
        },
        "preprocessing": {"categorical": ["region"], "impute": {"numeric": "mean"}},
        "evaluation": {"testSize": 0.2, "seed": 42},
        "artifact": {"format": "skops", "onnx": False},
    }


def measure(cmd: list[str], log: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds) of one child process; fails if it fails."""
    with log.open("w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=CHILD_ENV)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{cmd[0]} failed with exit code {code}; see {log}:\n{log.read_text()[-2000:]}")
    return wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime  # maxrss: KiB


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-overhead", type=float, default=0.15)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kubeloop-train-bench-"))
    try:
        csv = work / "data.csv"
        t0 = time.perf_counter()
        make_csv(csv, args.rows)
        size_mib = csv.stat().st_size / 2**20
        print(
            f"dataset: {args.rows} rows x 10 columns, {size_mib:.1f} MiB CSV"
            f" (generated in {time.perf_counter() - t0:.1f}s)",
            file=sys.stderr,
        )
        spec_file = work / "spec.json"
        spec_file.write_text(json.dumps(spec(csv)))
        train = shutil.which("kubeloop-train")
        ours_cmd = [train] if train else [sys.executable, "-m", "kubeloop_runtime.train.cli"]
        runs: dict[str, list[tuple[float, float, float]]] = {"bare": [], "ours": []}
        for i in range(args.repeats):
            for name in ("bare", "ours"):
                out = work / f"{name}-{i}"
                out.mkdir()
                if name == "bare":
                    cmd = [sys.executable, "-c", BARE, str(csv), str(out)]
                else:
                    cmd = [*ours_cmd, "--spec", str(spec_file), "--output", str(out)]
                wall, rss, cpu = measure(cmd, work / f"{name}-{i}.log")
                runs[name].append((wall, rss, cpu))
                print(
                    f"run {i + 1} {name}: {wall:.2f}s wall, {cpu:.2f}s CPU, {rss:.0f} MiB",
                    file=sys.stderr,
                )

        med: dict[str, tuple[float, float, float]] = {
            name: (
                statistics.median(v[0] for v in values),
                statistics.median(v[1] for v in values),
                statistics.median(v[2] for v in values),
            )
            for name, values in runs.items()
        }
        time_ratio = med["ours"][0] / med["bare"][0]
        rss_ratio = med["ours"][1] / med["bare"][1]
        cpu_ratio = med["ours"][2] / med["bare"][2]
        print(
            f"\nmedian of {args.repeats} runs, {args.rows} rows,"
            f" HistGradientBoostingClassifier(max_iter={MAX_ITER}), OMP_NUM_THREADS=1"
        )
        print(f"{'':<16}{'wall (s)':>10}{'peak RSS (MiB)':>16}{'CPU (s)':>10}")
        for name, label in (("bare", "bare sklearn"), ("ours", "kubeloop-train")):
            wall, rss, cpu = med[name]
            print(f"{label:<16}{wall:>10.2f}{rss:>16.0f}{cpu:>10.2f}")
        print(f"{'ratio':<16}{time_ratio:>10.3f}{rss_ratio:>16.3f}{cpu_ratio:>10.3f}")
        print("(the 15% limit applies to wall time and peak RSS; CPU time is for information)")
        limit = 1.0 + args.max_overhead
        if time_ratio > limit or rss_ratio > limit:
            print(f"FAIL: overhead above {args.max_overhead:.0%}", file=sys.stderr)
            return 1
        print(f"OK: overhead within {args.max_overhead:.0%}")
        return 0
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
