"""A process kubelet for tests: runs the real Kubeloop binaries behind kwok's pods.

kwok simulates nodes and pod lifecycles but runs nothing. For Kubeloop's own pods this
harness does what a kubelet would, with the real programs:

- a **training pod** (label ``kubeloop.io/trainingjob``; kwok leaves it Running) runs the
  real ``kubeloop-train`` with the container's command, args and env, then its exit code and
  termination message are written into the pod status, as the kubelet reports them;
- a **predictor pod** (label ``app.kubernetes.io/component=predictor``) runs the real
  ``kubeloop-serve`` on the pod's IP (kwok hands out 127.1.0.0/16, a loopback range) and
  port 8080, so the operator and the tests reach it at the pod IP as in a cluster. A server
  that exits is reported as a kubelet reports a crash loop (not ready, ``waiting:
  CrashLoopBackOff``, its termination message in ``lastState``) and restarted after a
  short back-off; once a restarted server answers ready, the pod is ready again.

Volumes are mapped to local directories: the artifact PVC to ``artifact_root``, a ConfigMap
volume to files written from the ConfigMap's data, a PVC volume to ``pvc_root/<claim>``.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, watch

from kubeloop_runtime import api

TRAIN_LABEL = api.LABEL_TRAININGJOB
PREDICTOR_SELECTOR = f"{api.LABEL_COMPONENT}=predictor"


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class ServerProcess:
    pod: str
    ip: str
    proc: subprocess.Popen[bytes]
    log: Path
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    restarts: int = 0
    restart_at: float | None = None  # when a crashed server starts again
    recovering: bool = False  # restarted after a crash, not yet reported ready

    @property
    def url(self) -> str:
        return f"http://{self.ip}:8080"


@dataclass
class ProcessKubelet:
    api_client: client.ApiClient
    namespace: str
    workdir: Path
    artifact_root: Path
    pvc_root: Path | None = None
    serve: bool = True
    train: bool = True
    servers: dict[str, ServerProcess] = field(default_factory=dict)
    trained: dict[str, int] = field(default_factory=dict)
    # Training processes running now, by pod; the most that ever ran at once.
    trainers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    most_trainers: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)
    # Rounds cut short by the API server being away (restarted, starting): a kubelet keeps
    # syncing through those, so they are no harness error.
    outages: int = 0

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api_client)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.artifact_root.mkdir(parents=True, exist_ok=True)
        if self.pvc_root is None:
            self.pvc_root = self.workdir / "pvcs"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ProcessKubelet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        t = threading.Thread(target=self._run, name=f"kubelet-{self.namespace}", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            servers = list(self.servers.values())
            self.servers.clear()
            trainers = list(self.trainers.values())
            self.trainers.clear()
        for s in servers:
            self._terminate(s.proc)
        for proc in trainers:
            self._terminate(proc)
        for t in self._threads:
            t.join(timeout=10)

    # ------------------------------------------------------------------ the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for pod in self._watch():
                    if self._stop.is_set():
                        return
                    self._handle(pod)
            except Exception as e:  # keep the harness alive; tests see self.errors
                if not self._stop.is_set():
                    if _api_away(e):
                        self.outages += 1
                    else:
                        self.errors.append(f"{type(e).__name__}: {e}")
                    self._stop.wait(0.5)

    def _watch(self) -> Iterator[dict[str, Any]]:
        # A short-lived watch, re-listed each round: level-based, like a kubelet's sync loop.
        w = watch.Watch()
        for event in w.stream(
            self.core.list_namespaced_pod,
            self.namespace,
            timeout_seconds=2,
        ):
            obj = event.get("raw_object")
            if isinstance(obj, dict):
                if event["type"] == "DELETED":
                    self._forget(obj["metadata"]["name"])
                else:
                    yield obj
        # After each window, reap servers whose pods are gone, and look after the others.
        names = {p.metadata.name for p in self.core.list_namespaced_pod(self.namespace).items}
        with self._lock:
            running = set(self.servers) | set(self.trainers)
        for gone in running - names:
            self._forget(gone)
        self._supervise()

    def _handle(self, pod: dict[str, Any]) -> None:
        meta, status = pod["metadata"], pod.get("status") or {}
        labels = meta.get("labels") or {}
        if meta.get("deletionTimestamp"):
            self._forget(meta["name"])
            return
        if status.get("phase") != "Running" or not status.get("podIP"):
            return  # not started by kwok yet, or already finished
        if TRAIN_LABEL in labels and self.train:
            if meta["uid"] not in self.trained:
                self.trained[meta["uid"]] = -1
                threading.Thread(target=self._train, args=(pod,), daemon=True).start()
        elif labels.get(api.LABEL_COMPONENT) == "predictor" and self.serve:
            with self._lock:
                if meta["name"] not in self.servers:
                    self.servers[meta["name"]] = self._start_server(pod)

    # ------------------------------------------------------------------ training pods

    def _container_env(
        self, container: dict[str, Any], pod: dict[str, Any] | None = None
    ) -> dict[str, str]:
        """The container's env: ``envFrom`` Secrets (read as a kubelet does), then literal
        values, and the downward API's ``fieldRef`` to the pod's metadata (how the Job
        controller hands an Indexed Job's pod ``JOB_COMPLETION_INDEX``)."""
        out: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            ref = source.get("secretRef")
            if ref is not None:
                secret = self.core.read_namespaced_secret(ref["name"], self.namespace)
                for key, value in (secret.data or {}).items():
                    out[key] = base64.b64decode(value).decode()
        for e in container.get("env") or []:
            if "value" in e:
                out[e["name"]] = e["value"]
            elif pod is not None and (e.get("valueFrom") or {}).get("fieldRef"):
                value = _field_ref(pod, e["valueFrom"]["fieldRef"]["fieldPath"])
                if value is not None:
                    out[e["name"]] = value
        return out

    def _volumes(self, pod: dict[str, Any], workdir: Path) -> dict[str, Path]:
        """Materialise the pod's volumes locally: volume name -> local directory."""
        out: dict[str, Path] = {}
        for v in pod["spec"].get("volumes") or []:
            name = v["name"]
            if "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                assert self.pvc_root is not None
                out[name] = self.pvc_root / claim
            elif "configMap" in v:
                cm = self.core.read_namespaced_config_map(v["configMap"]["name"], self.namespace)
                d = workdir / "volumes" / name
                d.mkdir(parents=True, exist_ok=True)
                items = v["configMap"].get("items")
                data = cm.data or {}
                pairs = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
                for key, rel in pairs:
                    (d / rel).write_text(data[key])
                out[name] = d
            else:
                d = workdir / "volumes" / name
                d.mkdir(parents=True, exist_ok=True)
                out[name] = d
        return out

    def _local_root(
        self, container: dict[str, Any], vols: dict[str, Path], mount_path: str, workdir: Path
    ) -> Path:
        """A local directory that looks like ``mount_path`` inside the container."""
        root = workdir / "fs" / mount_path.strip("/")
        root.mkdir(parents=True, exist_ok=True)
        for m in container.get("volumeMounts") or []:
            mp = m["mountPath"].rstrip("/")
            if mp == mount_path.rstrip("/"):
                return vols[m["name"]]
            if mp.startswith(mount_path.rstrip("/") + "/"):
                link = root / mp[len(mount_path.rstrip("/")) + 1 :]
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(vols[m["name"]])
        return root

    def _train(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        workdir = self.workdir / "pods" / meta["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        vols = self._volumes(pod, workdir)
        env = self._container_env(container, pod)
        artifact_mount = env.get("KUBELOOP_ARTIFACT_ROOT", api.ARTIFACT_MOUNT_PATH)
        data_mount = env.get("KUBELOOP_DATA_ROOT", api.DATA_MOUNT_PATH)
        # The artifact PVC maps to the shared artifact_root (the serving side reads it too).
        artifact_volume = _mount_volume(container, artifact_mount)
        if artifact_volume is not None:
            vols[artifact_volume] = self.artifact_root
        data_dir = self._local_root(container, vols, data_mount, workdir)
        term = workdir / "termination-log"
        term.write_text("")
        cmd = [*(container.get("command") or []), *(container.get("args") or [])]
        if not cmd or Path(cmd[0]).name != "kubeloop-train":
            self.errors.append(f"pod {meta['name']}: unexpected training command {cmd!r}")
            return
        run_env = {
            **os.environ,
            **env,
            "KUBELOOP_ARTIFACT_ROOT": str(self.artifact_root),
            "KUBELOOP_DATA_ROOT": str(data_dir),
            # Each pod downloads objects into its own scratch, as on its own node.
            "KUBELOOP_OBJECT_CACHE": str(workdir / "objects"),
        }
        exe = shutil.which("kubeloop-train") or str(Path(sys.executable).parent / "kubeloop-train")
        with (workdir / "train.log").open("wb") as log:
            proc = subprocess.Popen(
                [exe, *cmd[1:], "--termination-log", str(term)],
                env=run_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            with self._lock:
                self.trainers[meta["name"]] = proc
                self.most_trainers = max(self.most_trainers, len(self.trainers))
            try:
                rc = proc.wait(timeout=600)
            finally:
                with self._lock:
                    stopped = self.trainers.pop(meta["name"], None) is None
        self.trained[meta["uid"]] = rc
        if stopped:
            return  # the pod was deleted (a suspended Job, a deleted TrainingJob): no status
        message = term.read_text()[: api.TERMINATION_MESSAGE_LIMIT]
        finished = _now()
        patch = {
            "status": {
                "phase": "Succeeded" if rc == 0 else "Failed",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "PodCompleted" if rc == 0 else "PodFailed",
                        "lastTransitionTime": finished,
                    },
                    {
                        "type": "ContainersReady",
                        "status": "False",
                        "reason": "PodCompleted" if rc == 0 else "PodFailed",
                        "lastTransitionTime": finished,
                    },
                ],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": False,
                        "started": False,
                        "restartCount": 0,
                        "state": {
                            "terminated": {
                                "exitCode": rc,
                                "reason": "Completed" if rc == 0 else "Error",
                                "message": message,
                                "startedAt": (pod.get("status") or {}).get("startTime") or finished,
                                "finishedAt": finished,
                            }
                        },
                    }
                ],
            }
        }
        # As a kubelet does, the status is sent until it lands, through API server restarts.
        deadline = time.monotonic() + 300
        while True:
            try:
                self.core.patch_namespaced_pod_status(meta["name"], self.namespace, patch)
                return
            except Exception as e:
                if not _api_away(e) or time.monotonic() > deadline or self._stop.is_set():
                    raise
                self.outages += 1
                time.sleep(0.5)

    # ------------------------------------------------------------------ predictor pods

    BACKOFF_SECONDS = 2.0  # a kubelet's crash-loop back-off, compressed

    def _supervise(self) -> None:
        """Report exited servers as crash-looping containers and restart them; report a
        restarted server ready once it answers."""
        with self._lock:
            servers = list(self.servers.values())
        for s in servers:
            if s.restart_at is None and s.proc.poll() is not None:
                s.restarts += 1
                s.restart_at = time.monotonic() + self.BACKOFF_SECONDS
                self._report_crash(s)
            elif s.restart_at is not None and time.monotonic() >= s.restart_at:
                fresh = self._start_server(s.body)
                s.proc, s.restart_at, s.recovering = fresh.proc, None, True
            elif s.recovering and s.proc.poll() is None and _answers_ready(s.url):
                s.recovering = False
                self._report_running(s)

    def _container_status(self, s: ServerProcess, state: dict[str, Any]) -> dict[str, Any]:
        container = s.body["spec"]["containers"][0]
        return {
            "name": container["name"],
            "image": container["image"],
            "imageID": "",
            "restartCount": s.restarts,
            **state,
        }

    def _report_crash(self, s: ServerProcess) -> None:
        term = s.log.with_name("termination-log")
        message = term.read_text() if term.is_file() else ""
        if not message:  # terminationMessagePolicy FallbackToLogsOnError
            message = "\n".join(s.log.read_text(errors="replace").splitlines()[-20:])
        status = self._container_status(
            s,
            {
                "ready": False,
                "started": False,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {
                    "terminated": {
                        "exitCode": s.proc.returncode,
                        "reason": "Error",
                        "message": message[: api.TERMINATION_MESSAGE_LIMIT],
                        "finishedAt": _now(),
                    }
                },
            },
        )
        self._patch_readiness(s.pod, False, status)

    def _report_running(self, s: ServerProcess) -> None:
        status = self._container_status(
            s, {"ready": True, "started": True, "state": {"running": {"startedAt": _now()}}}
        )
        self._patch_readiness(s.pod, True, status)

    def _patch_readiness(self, pod: str, ready: bool, container: dict[str, Any]) -> None:
        stamp = _now()
        value = "True" if ready else "False"
        conditions = [
            {"type": t, "status": value, "lastTransitionTime": stamp}
            for t in ("Ready", "ContainersReady")
        ]
        try:
            self.core.patch_namespaced_pod_status(
                pod,
                self.namespace,
                {"status": {"conditions": conditions, "containerStatuses": [container]}},
            )
        except client.ApiException as e:
            if e.status != 404:
                raise

    def _start_server(self, pod: dict[str, Any]) -> ServerProcess:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        workdir = self.workdir / "pods" / meta["name"]
        workdir.mkdir(parents=True, exist_ok=True)
        env = self._container_env(container)
        ip = pod["status"]["podIP"]
        cmd = [*(container.get("command") or []), *(container.get("args") or [])]
        exe = shutil.which("kubeloop-serve") or str(Path(sys.executable).parent / "kubeloop-serve")
        run_env = {
            **os.environ,
            **env,
            "KUBELOOP_ARTIFACT_ROOT": str(self.artifact_root),
            "KUBELOOP_OBJECT_CACHE": str(workdir / "objects"),
        }
        log = workdir / "serve.log"
        term = workdir / "termination-log"
        term.write_text("")
        proc = subprocess.Popen(
            [exe, *cmd[1:], "--host", ip, "--port", "8080", "--termination-log", str(term)],
            env=run_env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return ServerProcess(pod=meta["name"], ip=ip, proc=proc, log=log, body=pod)

    def _forget(self, name: str) -> None:
        with self._lock:
            s = self.servers.pop(name, None)
            trainer = self.trainers.pop(name, None)
        if s is not None:
            self._terminate(s.proc)
        if trainer is not None:
            self._terminate(trainer)

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        # A predictor's kubeloop-serve drains for some seconds on SIGTERM (serve/server.py).
        # kwok hands a deleted pod's IP to the next pod at once, and there is no kube-proxy
        # here to drain from, so the second SIGTERM, which skips the drain, follows shortly.
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=0.3)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)

    # ------------------------------------------------------------------ for tests

    def server_for(self, pod_name: str) -> ServerProcess | None:
        with self._lock:
            return self.servers.get(pod_name)

    def running_trainers(self) -> list[str]:
        """Pods whose training process runs now."""
        with self._lock:
            return sorted(self.trainers)

    def running_servers(self) -> list[ServerProcess]:
        with self._lock:
            return list(self.servers.values())


def _api_away(e: BaseException) -> bool:
    """The API server did not answer (connection refused or reset, restarting: 5xx)."""
    if isinstance(e, client.ApiException):
        return e.status in (0, 500, 502, 503, 504)
    return isinstance(e, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


def _answers_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _mount_volume(container: dict[str, Any], mount_path: str) -> str | None:
    for m in container.get("volumeMounts") or []:
        if m["mountPath"].rstrip("/") == mount_path.rstrip("/"):
            return str(m["name"])
    return None


def _field_ref(pod: dict[str, Any], path: str) -> str | None:
    """The value of a downward-API ``fieldPath`` (metadata only, as the tests need)."""
    meta = pod["metadata"]
    m = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path)
    if m:
        value = (meta.get(m.group(1)) or {}).get(m.group(2))
        return None if value is None else str(value)
    if path in ("metadata.name", "metadata.namespace", "metadata.uid"):
        return str(meta.get(path.split(".", 1)[1]))
    return None
