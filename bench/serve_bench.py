"""Serving benchmark: kubeloop-serve vs KServe and MLServer on loopback, same model files.

    bash bench/setup_peers.sh                      # once: peer venvs (PyPI only)
    python bench/serve_bench.py [--duration 10]    # prints a table; exit 1 if a target is missed

Scenarios: the models ``kubeloop-train`` makes from the shipped specs, on the builtin iris
(feature names with spaces and parentheses): the 100-tree RandomForestClassifier of
manifests/samples/trainingjob-iris.yaml and the LogisticRegression (with scaling) of
examples/iris/trainingjob.yaml. Single-row Open Inference Protocol V2 requests, one FP64
tensor per named feature (request parameter ``content_type: pd``, which MLServer needs to
hand a Pipeline fitted on a DataFrame its columns), at 64 concurrent keep-alive connections
(RPS, p50, p99) and at 1 connection (p50), then a mixed point: 63 valid connections beside
one connection sending an out-of-range row (1e300), where no valid request may fail. A bare
ASGI app on our server stack (uvicorn + uvloop + httptools, fixed JSON) gives the raw HTTP
floor. The table prints the runtime that served each model (ONNX or scikit-learn).

Every server runs as ONE process pinned to CPU 0 with ``taskset``; the load generator
(``wrk``, C, one thread, keep-alive, Lua script for the POST body) is pinned to CPU 1.
The machine has 2 cores, so server and client do not compete for a core, but nothing
else runs on CPU 1 either: background load on the machine still adds noise.

Peers serve a joblib copy of the same fitted Pipeline with scikit-learn; kubeloop-serve
serves the trainer's output directory as it is (skops file, the ONNX graph the trainer
exported and verified, default monitoring with the drift window).

A third scenario (issue #15) is the 200-tree XGBClassifier of
manifests/samples/trainingjob-iris-xgboost.yaml: ONNX Runtime (graph from onnxmltools) here,
XGBoost's own predict behind the peers.

Targets (exit status 1 and a message when missed): forest at 64 clients >= 25x both
peers' RPS with a lower p99; logistic regression at 64 clients >= 4x; the booster at 64
clients >= 4x with a lower p99; at 1 client our p50 below both peers for every model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SPECS = {
    "forest": ROOT / "manifests/samples/trainingjob-iris.yaml",
    "logreg": ROOT / "examples/iris/trainingjob.yaml",
    # issue #15: a 200-tree XGBoost booster (XGBClassifier), ONNX via onnxmltools.
    "xgboost": ROOT / "manifests/samples/trainingjob-iris-xgboost.yaml",
}
FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
HOSTILE = [6.1, 1e300, 4.7, 1.2]
VENVS = Path(os.environ.get("KUBELOOP_BENCH_VENVS", Path.home() / ".cache/kubeloop/bench-venvs"))
ROW = [6.1, 2.8, 4.7, 1.2]
SERVER_CPU = "0"
CLIENT_CPU = "1"

TARGET_FOREST_RPS = 25.0
TARGET_LOGREG_RPS = 4.0
TARGET_BOOSTER_RPS = 4.0
TARGETS = {"forest": TARGET_FOREST_RPS, "logreg": TARGET_LOGREG_RPS, "xgboost": TARGET_BOOSTER_RPS}


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


NICE = 0  # --nice: raise the priority of servers and client alike (root only)


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    """Pin to one CPU (and renice), the same for every server and for the client."""
    out = ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") else cmd
    return ["nice", "-n", str(-NICE), *out] if NICE else out


def http(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:  # loopback only
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return 0, b""


@contextlib.contextmanager
def server(name: str, cmd: list[str], ready_url: str, log_dir: Path) -> Iterator[None]:
    log = (log_dir / f"{name}.log").open("wb")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        pinned(SERVER_CPU, cmd), stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; see {log.name}")
            if http("GET", ready_url)[0] == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after 120 s; see {log.name}")
            time.sleep(0.2)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"cannot parse wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str, body: bytes, connections: int, seconds: float, script_dir: Path, tag: str = "post"
) -> Result:
    script = script_dir / f"{tag}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    cmd = pinned(
        CLIENT_CPU,
        [
            "wrk",
            "-t1",
            "--timeout",
            "10s",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
    )
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return _parse_wrk(out)


def _parse_wrk(out: str) -> Result:
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, flags=re.M))
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(g) for g in m.groups())
    return Result(rps, _ms(lat["50"]), _ms(lat["99"]), errors)


def measure(url: str, body: bytes, args: argparse.Namespace, tmp: Path) -> dict[str, Result]:
    wrk(url, body, 64, args.warmup, tmp)  # warm caches, JIT-free but allocator/conn warmup
    many = wrk(url, body, 64, args.duration, tmp)
    one = wrk(url, body, 1, args.duration, tmp)
    return {"c64": many, "c1": one}


def measure_mixed(url: str, body: bytes, bad: bytes, args: argparse.Namespace, tmp: Path) -> Result:
    """63 valid connections beside 1 sending hostile rows; the valid ones' result."""
    hostile = tmp / "hostile.lua"
    hostile.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(bad.decode())}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    seconds = f"{max(1, round(args.duration))}s"
    cmd = pinned(CLIENT_CPU, ["wrk", "-t1", "--timeout", "10s", "-c1", f"-d{seconds}",
                              "-s", str(hostile), url])  # fmt: skip
    side = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return wrk(url, body, 63, args.duration, tmp, tag="valid")
    finally:
        side.wait(timeout=args.duration + 30)


def check_prediction(url: str, body: bytes, expected: int) -> None:
    status, data = http("POST", url, body)
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}: {data[:300]!r}")
    outputs = json.loads(data)["outputs"]
    got = outputs[0]["data"][0]
    if int(got) != expected:
        raise RuntimeError(f"{url}: predicted {got}, expected {expected}")


def train(scen: str, out: Path) -> tuple[Path, Any]:
    """``kubeloop-train`` on the shipped spec; returns (output dir, the fitted Pipeline)."""
    from kubeloop_runtime import api, artifacts  # noqa: PLC0415

    proc = subprocess.run(
        [sys.executable, "-m", "kubeloop_runtime.train.cli", "--spec", str(SPECS[scen]),
         "--output", str(out), "--log-level", "WARNING"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"kubeloop-train {SPECS[scen]} exited {proc.returncode}: {proc.stderr}")
    result = api.TrainingResult.model_validate_json(proc.stdout)
    assert result.artifact is not None
    model = artifacts.load_model(
        out / "model.skops", sha256=result.artifact.sha256, fmt=result.artifact.format
    )
    return out, model


def model_name(scen: str) -> str:
    """The model name of a scenario's shipped spec (the name in the URL paths)."""
    import yaml  # noqa: PLC0415

    doc = next(d for d in yaml.safe_load_all(SPECS[scen].read_text()) if d["kind"] == "TrainingJob")
    return str(doc["spec"]["model"])


def runtime_of(base: str, name: str) -> str:
    status, data = http("GET", f"{base}/v2/models/{name}")
    platform = json.loads(data).get("platform", "") if status == 200 else ""
    return {"kubeloop-onnx": "ONNX", "kubeloop-sklearn": "scikit-learn"}.get(platform, "?")


def mlserver_repo(root: Path, name: str, joblib_path: Path, port: int) -> Path:
    repo = root / f"mlserver-{name}"
    (repo / name).mkdir(parents=True, exist_ok=True)
    (repo / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": 0,
                "debug": False,
            }
        )
    )
    (repo / name / "model-settings.json").write_text(
        json.dumps(
            {
                "name": name,
                "implementation": "mlserver_sklearn.SKLearnModel",
                "parameters": {"uri": str(joblib_path), "version": "1"},
            }
        )
    )
    return repo


def v2_body(row: list[float] = ROW) -> bytes:
    """One FP64 tensor per named feature; ``content_type: pd`` lets MLServer build a frame."""
    return json.dumps(
        {
            "parameters": {"content_type": "pd"},
            "inputs": [
                {"name": f, "shape": [1], "datatype": "FP64", "data": [v]}
                for f, v in zip(FEATURES, row, strict=True)
            ],
        }
    ).encode()


def run(args: argparse.Namespace) -> int:
    global NICE  # noqa: PLW0603 - set once from the command line
    NICE = args.nice

    for tool in ("wrk",):
        if not shutil.which(tool):
            sys.exit(f"{tool} is required: apt-get install -y wrk")
    kserve_py = VENVS / "kserve/bin/python"
    mlserver_bin = VENVS / "mlserver/bin/mlserver"
    for p in (kserve_py, mlserver_bin):
        if not p.exists():
            sys.exit(f"{p} missing: run bash bench/setup_peers.sh first")

    tmp = Path(tempfile.mkdtemp(prefix="kubeloop-bench-"))
    results: dict[tuple[str, str], dict[str, Result]] = {}
    runtimes: dict[tuple[str, str], str] = {}
    hostile_status: dict[tuple[str, str], int] = {}
    body = v2_body()
    bad = v2_body(HOSTILE)
    scenarios = dict(SPECS)
    if args.only:
        scenarios = {k: v for k, v in scenarios.items() if k in args.only}
    try:
        port = free_port()
        with server(
            "bare", [sys.executable, str(HERE / "peers/bare_asgi.py"), "--port", str(port)],
            f"http://127.0.0.1:{port}/", tmp,
        ):  # fmt: skip
            results[("bare", "-")] = measure(f"http://127.0.0.1:{port}/", body, args, tmp)
            runtimes[("bare", "-")] = "-"
            print_row("bare ASGI floor", "-", results[("bare", "-")])
        for scen in scenarios:
            out, model = train(scen, tmp / scen)
            import joblib  # noqa: PLC0415
            import pandas as pd  # noqa: PLC0415

            joblib_path = tmp / f"{scen}.joblib"
            joblib.dump(model, joblib_path)
            name = model_name(scen)
            expected = int(model.predict(pd.DataFrame([ROW], columns=FEATURES))[0])
            servers: list[tuple[str, list[str], int]] = []
            port = free_port()
            servers.append((
                "kubeloop-serve",
                [sys.executable, "-m", "kubeloop_runtime.serve.cli", "--model-version",
                 str(out), "--host", "127.0.0.1", "--port", str(port),
                 "--log-level", "warning"],
                port,
            ))  # fmt: skip
            port = free_port()
            servers.append((
                "kserve",
                [str(kserve_py), str(HERE / "peers/kserve_server.py"), "--name", name,
                 "--model", str(joblib_path), "--port", str(port)],
                port,
            ))  # fmt: skip
            port = free_port()
            repo = mlserver_repo(tmp / scen, name, joblib_path, port)
            servers.append(("mlserver", [str(mlserver_bin), "start", str(repo)], port))
            for label, cmd, srv_port in servers:
                base = f"http://127.0.0.1:{srv_port}"
                with server(f"{label}-{scen}", cmd, f"{base}/v2/models/{name}/ready", tmp):
                    url = f"{base}/v2/models/{name}/infer"
                    check_prediction(url, body, expected)
                    key = (label, scen)
                    runtimes[key] = (
                        runtime_of(base, name) if label == "kubeloop-serve" else ("scikit-learn")
                    )
                    hostile_status[key] = http("POST", url, bad)[0]
                    results[key] = measure(url, body, args, tmp)
                    results[key]["mixed"] = measure_mixed(url, body, bad, args, tmp)
                    print_row(label, scen, results[key])
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return report(results, runtimes, hostile_status, scenarios, args)


def print_row(label: str, scen: str, r: dict[str, Result]) -> None:
    many, one = r["c64"], r["c1"]
    mixed = r.get("mixed")
    print(
        f"  measured {label:<16} {scen:<7} 64c: {many.rps:9.0f} rps p50 {many.p50_ms:7.2f} ms"
        f" p99 {many.p99_ms:7.2f} ms | 1c: p50 {one.p50_ms:6.2f} ms"
        + (f" | mixed 63+1: {mixed.rps:7.0f} rps, {mixed.errors} valid failed" if mixed else "")
        + (f"  ERRORS {many.errors + one.errors}" if many.errors + one.errors else ""),
        flush=True,
    )


def _ratio(a: float, b: float) -> float:
    """a / b; infinite when b is 0 (a peer that completed no request in the window)."""
    return a / b if b else float("inf")


def report(
    results: dict[tuple[str, str], dict[str, Result]],
    runtimes: dict[tuple[str, str], str],
    hostile_status: dict[tuple[str, str], int],
    scenarios: dict[str, Any],
    args: argparse.Namespace,
) -> int:
    lines = [
        "| model | server | runtime | RPS @64 | p50 @64 (ms) | p99 @64 (ms) | p50 @1 (ms)"
        " | RPS @1 | mixed 63+1: valid RPS | valid failed | hostile row got |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (label, scen), r in results.items():
        mixed = r.get("mixed")
        lines.append(
            f"| {scen} | {label} | {runtimes.get((label, scen), '?')} | {r['c64'].rps:,.0f} |"
            f" {r['c64'].p50_ms:.2f} | {r['c64'].p99_ms:.2f} | {r['c1'].p50_ms:.3f} |"
            f" {r['c1'].rps:,.0f} |"
            + (
                f" {mixed.rps:,.0f} | {mixed.errors} | {hostile_status[(label, scen)]} |"
                if mixed
                else " | | |"
            )
        )
    print()
    print("\n".join(lines))
    print()
    failures: list[str] = []
    for (label, scen), r in results.items():
        if r["c64"].errors or r["c1"].errors:
            failures.append(f"{label} {scen}: {r['c64'].errors + r['c1'].errors} failed requests")
        if label == "kubeloop-serve" and r["mixed"].errors:
            failures.append(f"{label} {scen}: {r['mixed'].errors} valid requests failed beside"
                            " a hostile client")  # fmt: skip
        if label == "kubeloop-serve" and not 400 <= hostile_status[(label, scen)] < 500:
            failures.append(f"{label} {scen}: the hostile row got {hostile_status[(label, scen)]}")
        if label == "kubeloop-serve" and runtimes[(label, scen)] != "ONNX":
            failures.append(f"{label} {scen}: served by {runtimes[(label, scen)]}, not ONNX")
    for scen in scenarios:
        ours = results[("kubeloop-serve", scen)]
        target = TARGETS[scen]
        for peer in ("kserve", "mlserver"):
            theirs = results[(peer, scen)]
            ratio = _ratio(ours["c64"].rps, theirs["c64"].rps)
            p99 = _ratio(theirs["c64"].p99_ms, ours["c64"].p99_ms)
            p50 = _ratio(theirs["c1"].p50_ms, ours["c1"].p50_ms)
            print(
                f"{scen:<7} vs {peer:<9} RPS@64 x{ratio:6.1f} (target x{target:g})"
                f"  p99@64 {ours['c64'].p99_ms:.2f} vs {theirs['c64'].p99_ms:.2f} ms"
                f" (x{p99:.1f} lower)  p50@1 {ours['c1'].p50_ms:.3f} vs"
                f" {theirs['c1'].p50_ms:.3f} ms (x{p50:.1f} lower)"
            )
            if ratio < target:
                failures.append(
                    f"{scen} vs {peer}: RPS ratio x{ratio:.1f} is below the x{target:g} target"
                    f" ({ratio / target:.0%} of it)"
                )
            if scen != "logreg" and ours["c64"].p99_ms >= theirs["c64"].p99_ms:
                failures.append(f"{scen} vs {peer}: p99 at 64 clients is not lower")
            if ours["c1"].p50_ms >= theirs["c1"].p50_ms:
                failures.append(f"{scen} vs {peer}: p50 at 1 client is not lower")
    bare = results.get(("bare", "-"))
    if bare is not None:
        for scen in scenarios:
            ours = results[("kubeloop-serve", scen)]
            print(
                f"{scen:<7} kubeloop-serve reaches {ours['c64'].rps / bare['c64'].rps:.0%} of the"
                " bare ASGI floor's RPS at 64 clients"
            )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    f"{k[0]}/{k[1]}": {
                        **{c: vars(v) for c, v in r.items()},
                        "runtime": runtimes.get(k),
                        "hostile_status": hostile_status.get(k),
                    }
                    for k, r in results.items()
                },
                indent=2,
            )
        )
    if failures:
        print("\nTARGETS MISSED:")
        for f in failures:
            print(f"  - {f}")
        return 1
    print("\nAll targets met.")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up load")
    p.add_argument("--only", nargs="*", choices=list(SPECS), help="scenarios to run")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run servers and client at nice -N (root; fair on a machine shared with other work)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    sys.exit(run(p.parse_args()))


if __name__ == "__main__":
    main()
