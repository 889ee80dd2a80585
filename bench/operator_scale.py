"""The operator at scale (issue #13): N InferenceServices on the local control plane (kwok).

One run, against the cluster in $KUBECONFIG (hack/cluster.sh), prints each figure and its
target and exits 1 when a target is missed:

1. **Ready time**. Baseline: the same N predictor Deployments and Services the operator
   would make, created directly (no owner), until every Deployment is available. Then N
   ModelVersions and N InferenceServices (each serving its own version) through the
   operator, until every InferenceService is Ready. Target: operator <= 1.5 x direct.
   Both create with the same number of client threads; the controller-manager and kwok
   do the same work behind both.
2. **CPU per object**: the operator process's CPU seconds while converging, over N.
3. **Steady state** (--steady seconds, default 300): nothing changes; the operator makes
   zero writes and at most 0.02 requests per second per object. Requests are counted by
   a proxy between the operator and the API server (every request, kopf's included;
   a watch counts once, when it is opened).
4. **Memory**: the operator's RSS at the end, at most 300 MiB at N = 1,000.
5. **Restart**: the operator is killed and started again at steady state; it reconciles
   every object from its caches and makes zero writes.
6. **Registry under contention**: --trainingjobs (default 200) TrainingJobs for one model
   submitted at once end as versions 1..200, no gap and no duplicate. A fake kubelet ends
   each training pod with a valid TrainingResult (no real training: that is not what is
   measured here).

    KUBECONFIG=.cluster/kubeconfig python3 bench/operator_scale.py [--n 1000] [--steady 300]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import os
import re
import ssl
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from aiohttp import ClientSession, ClientTimeout, TCPConnector, web
from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "serving_image")]

from tests.integration.harness import (  # noqa: E402
    KWOK_TIER_ANNOTATIONS,
    Cluster,
    OperatorProcess,
    operator_kubeconfig,
    wait_for,
)
from tests.integration.test_inferenceservice import model_version  # noqa: E402

from kubeloop.builders import predictor as b  # noqa: E402
from kubeloop.kube import Kube  # noqa: E402
from kubeloop.settings import Settings  # noqa: E402
from kubeloop_runtime import api  # noqa: E402

THREADS = 8
MiB = 1024 * 1024


# ----------------------------------------------------------------------------- proxy


class CountingProxy:
    """HTTP on 127.0.0.1 -> HTTPS to the API server, counting every request by method.

    Streams responses (watches) through; the client's own Authorization header is passed
    on, so the operator authenticates as itself."""

    def __init__(self, server: str, ca_file: str | None) -> None:
        self.server = server.rstrip("/")
        self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.counts: Counter[str] = Counter()
        self.paths: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def snapshot(self) -> Counter[str]:
        with self.lock:
            return Counter(self.counts)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self.session = ClientSession(
            connector=TCPConnector(ssl=self.ctx or False, limit=0),
            timeout=ClientTimeout(total=None, sock_read=None),
            auto_decompress=False,
        )
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("1", "true")
        method = "WATCH" if watch else request.method
        path = re.sub(
            r"/namespaces/[^/]+(/[^/]+)?(/[^/]+)?",
            lambda m: "/namespaces/*" + (m.group(1) or "") + ("/*" if m.group(2) else ""),
            request.path,
        )
        with self.lock:
            self.counts[method] += 1
            self.paths[f"{method} {path}"] += 1
        body = await request.read()
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("host", "content-length", "transfer-encoding", "connection")
        }
        try:
            return await self._forward(request, body, headers)
        except (ConnectionError, asyncio.CancelledError):  # the client went away (killed)
            return web.Response(status=499)

    async def _forward(
        self, request: web.Request, body: bytes, headers: dict[str, str]
    ) -> web.StreamResponse:
        async with self.session.request(
            request.method,
            self.server + request.rel_url.raw_path_qs,
            data=body or None,
            headers=headers,
        ) as upstream:
            resp = web.StreamResponse(status=upstream.status)
            for k, v in upstream.headers.items():
                if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                    resp.headers[k] = v
            await resp.prepare(request)
            async for chunk in upstream.content.iter_any():
                await resp.write(chunk)
            await resp.write_eof()
            return resp


def proxied_kubeconfig(source: Path, port: int, dest: Path) -> Path:
    cfg = yaml.safe_load(source.read_text())
    for c in cfg["clusters"]:
        c["cluster"] = {"server": f"http://127.0.0.1:{port}"}
    dest.write_text(yaml.safe_dump(cfg))
    return dest


def upstream_of(kubeconfig: Path, workdir: Path) -> tuple[str, str | None]:
    cfg = yaml.safe_load(kubeconfig.read_text())
    cl = cfg["clusters"][0]["cluster"]
    ca = cl.get("certificate-authority")
    if cl.get("certificate-authority-data"):
        ca = str(workdir / "ca.crt")
        Path(ca).write_bytes(base64.b64decode(cl["certificate-authority-data"]))
    return cl["server"], ca


# ----------------------------------------------------------------------------- helpers


def now() -> float:
    return time.monotonic()


def parallel(fn: Callable[[Any], Any], items: Iterable[Any]) -> None:
    with ThreadPoolExecutor(THREADS) as pool:
        for _ in pool.map(fn, items):
            pass


def make_namespace(core: client.CoreV1Api, name: str) -> None:
    """A namespace with the artifact PVC the predictor pods mount (bound to a hostPath PV;
    kwok never mounts it, the scheduler only needs it bound)."""
    core.create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {"kubeloop.io/bench": "true"},
                # The kwok tier: pods get the kwok node's selector and toleration.
                "annotations": dict(KWOK_TIER_ANNOTATIONS),
            }
        }
    )
    core.create_persistent_volume(
        {
            "metadata": {"name": f"{name}-artifacts", "labels": {"kubeloop.io/bench": "true"}},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany", "ReadOnlyMany"],
                "storageClassName": "",
                "persistentVolumeReclaimPolicy": "Retain",
                "hostPath": {"path": f"/tmp/{name}-artifacts"},
                "claimRef": {"namespace": name, "name": "kubeloop-artifacts"},
            },
        }
    )
    core.create_namespaced_persistent_volume_claim(
        name,
        {
            "metadata": {"name": "kubeloop-artifacts"},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": f"{name}-artifacts",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    wait_for(lambda: _sa(core, name), timeout=60, what=f"the default ServiceAccount of {name}")


def _sa(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespaced_service_account("default", ns)
    except client.ApiException:
        return False
    return True


def _exists(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespace(ns)
    except client.ApiException as e:
        if e.status == 404:
            return False
        raise
    return True


def drop_namespace(core: client.CoreV1Api, name: str) -> None:
    for fn, arg in (
        (core.delete_namespace, name),
        (core.delete_persistent_volume, f"{name}-artifacts"),
    ):
        with contextlib.suppress(client.ApiException):
            fn(arg)


def count_ready_deployments(kube: Kube, ns: str) -> int:
    n = 0
    for d in kube.list("apps/v1", "Deployment", ns):
        st = d.get("status") or {}
        want = d["spec"].get("replicas", 1)
        n += st.get("availableReplicas", 0) >= want and st.get("updatedReplicas", 0) >= want
    return n


def count_ready(kube: Kube, ns: str, kind: str) -> int:
    n = 0
    for o in kube.list(api.API_VERSION, kind, ns):
        for c in (o.get("status") or {}).get("conditions") or []:
            n += c["type"] == api.COND_READY and c["status"] == "True"
    return n


def wait_count(
    what: str, fn: Callable[[], int], n: int, timeout: float, poll: float = 1.0
) -> float:
    start = now()
    last = -1
    while now() - start < timeout:
        got = fn()
        if got != last:
            last = got
        if got >= n:
            return now()
        time.sleep(poll)
    raise SystemExit(f"timed out after {timeout:.0f}s: {what} ({last}/{n})")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def writes(c: Counter[str]) -> int:
    return sum(v for k, v in c.items() if k in ("POST", "PUT", "PATCH", "DELETE"))


def settle(op: OperatorProcess, quiet: float = 5.0, timeout: float = 600.0) -> None:
    op.settled(quiet=quiet, timeout=timeout)


# ----------------------------------------------------------------------------- phases


def direct_children(ns: str, i: int, settings: Settings) -> list[dict[str, Any]]:
    """The Deployment and Service the operator builds for InferenceService isvc-<i>,
    without the owner reference (there is no owner)."""
    spec = api.InferenceServiceSpec.model_validate(isvc_spec(i))
    owner = b.Owner(name=f"isvc-{i}", namespace=ns, uid="00000000-0000-0000-0000-000000000000")
    mv = model_version(ns, i, "a" * 64)
    served = b.ServedVersion(f"iris-v{i}", api.ModelVersionSpec.model_validate(mv["spec"]))
    objs = [
        b.build_deployment(spec, owner, served, b.STABLE, settings, replicas=1),
        b.build_service(owner),
    ]
    for o in objs:
        o["metadata"].pop("ownerReferences", None)
    return objs


def isvc(ns: str, i: int) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "InferenceService",
        "metadata": {"name": f"isvc-{i}", "namespace": ns},
        "spec": isvc_spec(i),
    }


def isvc_spec(i: int) -> dict[str, Any]:
    # Small requests: the kwok node has 64 CPUs, and 1,000 pods at the default 100m
    # would not fit.
    return {
        "model": {"modelVersion": f"iris-v{i}"},
        "replicas": 1,
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
    }


def training_result() -> str:
    mv = model_version("x", 1, "b" * 64)["spec"]
    result = {
        "succeeded": True,
        "reason": "Trained",
        "message": "accuracy 0.97 >= 0.9",
        "task": "classification",
        "artifact": mv["artifact"],
        "framework": mv["framework"],
        "signature": mv["signature"],
        "metrics": {"accuracy": 0.97},
        "dataset": mv["dataset"],
    }
    api.TrainingResult.model_validate(result)
    return json.dumps(result)


class FakeKubelet:
    """Ends every training pod in a namespace with a successful TrainingResult."""

    def __init__(self, core: client.CoreV1Api, ns: str) -> None:
        self.core, self.ns = core, ns
        self.done: set[str] = set()
        self.message = training_result()
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        pool = ThreadPoolExecutor(4)
        while not self.stop.is_set():
            pods = self.core.list_namespaced_pod(
                self.ns, label_selector=api.LABEL_TRAININGJOB
            ).items
            todo = [
                p
                for p in pods
                if p.metadata.name not in self.done
                and p.spec.node_name
                and p.status.phase == "Running"
            ]
            list(pool.map(self._finish, todo))
            self.stop.wait(0.5)

    def _finish(self, pod: Any) -> None:
        stamp = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        container = pod.spec.containers[0]
        self.core.patch_namespaced_pod_status(
            pod.metadata.name,
            self.ns,
            {
                "status": {
                    "phase": "Succeeded",
                    "conditions": [
                        {"type": "Ready", "status": "False", "reason": "PodCompleted"},
                        {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"},
                    ],
                    "containerStatuses": [
                        {
                            "name": container.name,
                            "image": container.image,
                            "imageID": "",
                            "ready": False,
                            "restartCount": 0,
                            "state": {
                                "terminated": {
                                    "exitCode": 0,
                                    "reason": "Completed",
                                    "message": self.message,
                                    "startedAt": stamp,
                                    "finishedAt": stamp,
                                }
                            },
                        }
                    ],
                }
            },
        )
        self.done.add(pod.metadata.name)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--steady", type=float, default=300.0)
    p.add_argument("--trainingjobs", type=int, default=200)
    p.add_argument("--max-ratio", type=float, default=1.5)
    p.add_argument("--max-rps-per-object", type=float, default=0.02)
    p.add_argument("--max-rss-mib", type=float, default=300.0)
    p.add_argument("--keep", action="store_true", help="keep the namespaces")
    args = p.parse_args(argv)
    n = args.n

    cluster = Cluster.up(REPO)
    cluster.install_crds(REPO / "crds")
    admin = cluster.api_client()
    admin.configuration.connection_pool_maxsize = THREADS * 2
    kube = Kube(admin)
    core = client.CoreV1Api(admin)
    run = uuid.uuid4().hex[:6]
    ns_direct, ns_op, ns_tj = f"bench-direct-{run}", f"bench-op-{run}", f"bench-tj-{run}"
    results: list[tuple[str, str, str, bool]] = []  # (figure, value, target, ok)

    def report(name: str, value: str, target: str = "", ok: bool = True) -> None:
        results.append((name, value, target, ok))
        print(f"  {name:<48} {value:>14}   {target}{'' if ok else '   MISSED'}", flush=True)

    workdir = Path(tempfile.mkdtemp(prefix="kubeloop-bench-"))
    creds = operator_kubeconfig(cluster, workdir / "operator-kubeconfig")
    server, ca = upstream_of(cluster.kubeconfig, workdir)
    proxy = CountingProxy(server, ca)
    op_kubeconfig = proxied_kubeconfig(creds, proxy.port, workdir / "proxied-kubeconfig")
    settings = Settings()
    print(f"Operator at scale: N={n}, steady {args.steady:.0f}s, {args.trainingjobs} TrainingJobs")

    namespaces = [ns_direct, ns_op, ns_tj]
    op: OperatorProcess | None = None
    try:
        for ns in namespaces:
            make_namespace(core, ns)

        # 1. Direct.
        start = now()
        parallel(
            kube.create,
            (o for i in range(1, n + 1) for o in direct_children(ns_direct, i, settings)),
        )
        created = now()
        end = wait_count(
            "direct Deployments available",
            lambda: count_ready_deployments(kube, ns_direct),
            n,
            1800,
            poll=1.0 if n <= 200 else 2.0,
        )
        direct = end - start
        report("direct: create 2N objects", f"{created - start:.1f} s")
        report("direct: all Deployments available", f"{direct:.1f} s")
        drop_namespace(core, ns_direct)
        # Let the garbage collector finish before the next phase, which it would slow down.
        wait_for(
            lambda: not _exists(core, ns_direct),
            timeout=900,
            interval=2,
            what=f"namespace {ns_direct} to be deleted",
        )

        op = OperatorProcess(
            cluster,
            workdir=workdir / "operator",
            kubeconfig=op_kubeconfig,
            namespaces=[ns_op, ns_tj],
            env={
                "KUBELOOP_POLL_INTERVAL": "10",
                "KUBELOOP_WATCH_TIMEOUT": "1800",
                "KUBELOOP_BACKOFF": "5",
                "KUBELOOP_RESYNC_PERIOD": "600",
            },
        )
        op.start()
        # 2. The registry under contention (before the InferenceServices: the kwok node
        # holds 1,000 pods, and these runs leave theirs behind).
        kubelet = FakeKubelet(core, ns_tj)
        m = args.trainingjobs
        start = now()
        parallel(
            lambda i: kube.create(tj_body(ns_tj, f"run-{i}")),
            range(m),
        )
        wait_count(
            "TrainingJobs registered",
            lambda: len(kube.list(api.API_VERSION, "ModelVersion", ns_tj)),
            m,
            1800,
        )
        kubelet.stop.set()
        versions = sorted(
            (mv["spec"]["version"], mv["spec"]["lineage"]["trainingJob"])
            for mv in kube.list(api.API_VERSION, "ModelVersion", ns_tj)
        )
        numbers = [v for v, _ in versions]
        runs = [r for _, r in versions]
        ok = numbers == list(range(1, m + 1)) and len(set(runs)) == m
        report(
            f"{m} TrainingJobs at once: versions",
            f"{numbers[0] if numbers else '-'}..{numbers[-1] if numbers else '-'}",
            f"1..{m}, no gap, no duplicate",
            ok,
        )
        report(f"{m} TrainingJobs: all registered", f"{now() - start:.1f} s")
        drop_namespace(core, ns_tj)
        wait_for(
            lambda: not _exists(core, ns_tj),
            timeout=600,
            interval=2,
            what=f"namespace {ns_tj} to be deleted",
        )

        # 3. Through the operator.
        cpu0 = cpu_seconds(op.proc.pid)  # type: ignore[union-attr]
        start = now()
        parallel(
            kube.create,
            (
                o
                for i in range(n)
                for o in (model_version(ns_op, i + 1, "a" * 64), isvc(ns_op, i + 1))
            ),
        )
        created = now()
        end = wait_count(
            "InferenceServices Ready",
            lambda: count_ready(kube, ns_op, "InferenceService"),
            n,
            1800,
            poll=1.0 if n <= 200 else 2.0,
        )
        through = end - start
        report("operator: create 2N objects", f"{created - start:.1f} s")
        report(
            "operator: all InferenceServices Ready",
            f"{through:.1f} s",
        )
        ratio = through / direct
        report(
            "ratio operator / direct",
            f"{ratio:.2f}",
            f"<= {args.max_ratio}",
            ratio <= args.max_ratio,
        )
        settle(op)
        cpu1 = cpu_seconds(op.proc.pid)  # type: ignore[union-attr]
        report("operator CPU per object (converging)", f"{(cpu1 - cpu0) / n * 1000:.1f} ms")

        # 4. Steady state.
        before, t0, c0 = proxy.snapshot(), now(), cpu_seconds(op.proc.pid)  # type: ignore[union-attr]
        time.sleep(args.steady)
        after, t1, c1 = proxy.snapshot(), now(), cpu_seconds(op.proc.pid)  # type: ignore[union-attr]
        delta = after - before
        objects = n  # per InferenceService (with its ModelVersion and children): the stricter
        rps = sum(delta.values()) / (t1 - t0)
        report(f"steady ({t1 - t0:.0f} s): writes", f"{writes(delta)}", "== 0", writes(delta) == 0)
        report(
            "steady: requests/s per object",
            f"{rps / objects:.5f}",
            f"<= {args.max_rps_per_object}",
            rps / objects <= args.max_rps_per_object,
        )
        report("steady: operator CPU", f"{(c1 - c0) / (t1 - t0) * 100:.2f} %")
        rss = rss_bytes(op.proc.pid) / MiB  # type: ignore[union-attr]
        report(
            "operator RSS", f"{rss:.0f} MiB", f"<= {args.max_rss_mib:.0f}", rss <= args.max_rss_mib
        )

        # 5. Restart at steady state.
        op.kill()
        before = proxy.snapshot()
        t0 = now()
        op.start()
        wait_for(
            lambda: (
                (
                    op_metric(
                        op, "controller_runtime_reconcile_total", controller="inferenceservice"
                    )
                    or 0
                )
                >= n
            ),
            timeout=600,
            interval=1,
            what="the restarted operator to reconcile every InferenceService",
        )
        settle(op)
        delta = proxy.snapshot() - before
        report("restart: time to reconcile everything", f"{now() - t0:.1f} s")
        report("restart: writes", f"{writes(delta)}", "== 0", writes(delta) == 0)

    finally:
        if op is not None:
            op.stop()
            (workdir / "operator.log").write_text(op.log())
        if not args.keep:
            for ns in namespaces:
                drop_namespace(core, ns)
    missed = [r for r in results if not r[3]]
    print(f"{'MISSED: ' + ', '.join(r[0] for r in missed) if missed else 'All targets met.'}")
    print(f"(operator log and kubeconfigs in {workdir})")
    top = sorted(proxy.paths.items(), key=lambda kv: -kv[1])[:12]
    print("Requests through the proxy, whole run:", json.dumps(dict(top), indent=1))
    return 1 if missed else 0


def op_metric(op: OperatorProcess, name: str, **labels: str) -> float | None:
    total = None
    for line in op.metrics().splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            total = (total or 0) + float(line.rsplit(" ", 1)[1])
    return total


def tj_body(ns: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "model": "iris",
            "dataset": {"builtin": "iris"},
            "estimator": {"type": "LogisticRegression"},
            "artifact": {"onnx": False},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
