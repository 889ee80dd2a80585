"""``kubectl kubeloop``: the closed loop and the registry from the command line.

Installed as ``kubectl-kubeloop``, so kubectl finds it as a plugin. Uses the current
kubeconfig context (``--kubeconfig``, ``--context`` and ``-n`` work as in kubectl)::

    kubectl kubeloop history <model>    versions, newest first: metrics, aliases, run, trigger, data
    kubectl kubeloop lineage <isvc>     serving version -> training job -> trigger -> dataset
    kubectl kubeloop retrain <isvc>     ask the closed loop to retrain now (annotation)
    kubectl kubeloop promote <isvc>     promote the running canary now
    kubectl kubeloop rollback <isvc>    drop the running canary
    kubectl kubeloop ui                 a local, read-only web page of all of it (docs/ui.md)

The formatting functions are pure and unit-tested; the commands are thin.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from kubeloop import registry
from kubeloop.manifest import Obj
from kubeloop_runtime import api, rfc3339

# Metrics shown in history, in this order when present.
_SHOWN_METRICS = (
    "accuracy",
    "f1",
    "roc_auc",
    "rmse",
    "mae",
    "r2",
    "champion_accuracy",
    "champion_rmse",
)


class CliError(Exception):
    """A user-facing failure: printed without a traceback, exit code 1."""


# ----------------------------------------------------------------------------- formatting


def _short(sha: Any) -> str:
    return str(sha)[:12] if sha else "-"


def _fmt_metrics(metrics: Mapping[str, Any]) -> str:
    keys = [k for k in _SHOWN_METRICS if k in metrics] or sorted(metrics)[:4]
    parts = []
    for k in keys:
        v = metrics[k]
        parts.append(f"{k}={v:.4g}" if isinstance(v, int | float) else f"{k}={v}")
    return " ".join(parts) or "-"


def _fmt_trigger(trigger: Mapping[str, Any] | None) -> str:
    if not trigger:
        return "-"
    value = trigger.get("value")
    text = f"{trigger.get('signal', '?')}"
    if value:
        text += f"={value}"
    if trigger.get("inferenceService"):
        text += f"@{trigger['inferenceService']}"
    return text


def _ready(mv: Obj) -> str:
    for c in (mv.get("status") or {}).get("conditions") or []:
        if c.get("type") == api.COND_READY:
            return str(c.get("status", "Unknown"))
    return "Unknown"


def history_rows(model_versions: Sequence[Obj], model: str) -> list[list[str]]:
    """One row per version of ``model``, newest first."""
    rows = []
    mine = [mv for mv in model_versions if registry.model_of(mv) == model]
    for mv in sorted(mine, key=registry.version_of, reverse=True):
        spec = mv.get("spec") or {}
        lineage = spec.get("lineage") or {}
        dataset = spec.get("dataset") or {}
        gate = spec.get("gate") or {}
        rows.append(
            [
                registry.name_of(mv),
                str(registry.version_of(mv)),
                ",".join(registry.confirmed_aliases(mv)) or "-",
                _ready(mv) if gate.get("passed", True) else "GateFailed",
                _fmt_metrics(spec.get("metrics") or {}),
                str(lineage.get("trainingJob") or "-"),
                _fmt_trigger(lineage.get("trigger")),
                f"{_short(dataset.get('sha256'))} {dataset.get('source', '')}".strip(),
                str((mv.get("metadata") or {}).get("creationTimestamp") or "-"),
            ]
        )
    return rows


HISTORY_HEADER = [
    "NAME", "VERSION", "ALIASES", "READY", "METRICS",
    "TRAININGJOB", "TRIGGER", "DATASET", "CREATED",
]  # fmt: skip


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces, like kubectl get."""
    widths = [len(h) for h in header]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(header), *[list(r) for r in rows]]:
        lines.append("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def lineage_text(isvc: Obj, mv: Obj | None, tj: Obj | None) -> str:
    """Serving version -> training job -> trigger -> dataset, one step per line."""
    name = (isvc.get("metadata") or {}).get("name", "?")
    spec = isvc.get("spec") or {}
    status = isvc.get("status") or {}
    ref = spec.get("model") or {}
    how = (
        f"alias {ref.get('model')}@{ref.get('alias')}"
        if ref.get("alias")
        else f"pinned {ref.get('modelVersion')}"
    )
    lines = [f"InferenceService {name} ({how})"]
    serving = status.get("servingVersion") or "-"
    lines.append(f"  serving:      {serving}")
    if status.get("canaryVersion"):
        lines.append(f"  canary:       {status['canaryVersion']}")
    last = status.get("lastRetrain") or {}
    if last:
        lines.append(
            f"  last retrain: {last.get('trainingJob', '-')} ({last.get('signal', '?')}"
            f"{'=' + str(last['value']) if last.get('value') else ''} at {last.get('time', '?')})"
        )
    if mv is None:
        lines.append(f"ModelVersion {serving}: not found")
        return "\n".join(lines) + "\n"
    mv_spec = mv.get("spec") or {}
    lin = mv_spec.get("lineage") or {}
    lines.append(
        f"ModelVersion {registry.name_of(mv)} (v{registry.version_of(mv)},"
        f" aliases {','.join(registry.confirmed_aliases(mv)) or '-'})"
    )
    lines.append(f"  metrics:      {_fmt_metrics(mv_spec.get('metrics') or {})}")
    gate = mv_spec.get("gate") or {}
    if gate.get("message"):
        lines.append(f"  gate:         {gate['message']}")
    lines.append(f"  trained by:   TrainingJob {lin.get('trainingJob') or '-'}")
    lines.append(f"  trigger:      {_fmt_trigger(lin.get('trigger'))}")
    if lin.get("trigger", {}) and lin["trigger"].get("time"):
        lines.append(f"  triggered at: {lin['trigger']['time']}")
    ds = mv_spec.get("dataset") or {}
    lines.append(
        f"  dataset:      {ds.get('source', '-')} sha256={ds.get('sha256', '-')}"
        f" rows={ds.get('rows', '-')} columns={ds.get('columns', '-')}"
    )
    if tj is not None:
        tj_spec = tj.get("spec") or {}
        tj_status = tj.get("status") or {}
        lines.append(f"TrainingJob {(tj.get('metadata') or {}).get('name')}")
        lines.append(f"  estimator:    {(tj_spec.get('estimator') or {}).get('type', '-')}")
        lines.append(f"  champion:     {tj_spec.get('champion') or '-'}")
        lines.append(
            f"  finished:     {tj_status.get('completionTime') or '-'}"
            f" ({tj_status.get('reason') or '-'})"
        )
    return "\n".join(lines) + "\n"


def retrain_patch(value: str) -> dict[str, Any]:
    return {"metadata": {"annotations": {api.ANNOTATION_RETRAIN: value}}}


# ----------------------------------------------------------------------------- commands


def _kube(args: argparse.Namespace) -> Any:
    from kubernetes import config as _config  # noqa: PLC0415 (only when talking to a cluster)

    from kubeloop.kube import Kube  # noqa: PLC0415

    config: Any = _config  # the client's functions are untyped
    api_client = config.new_client_from_config(config_file=args.kubeconfig, context=args.context)
    return Kube(api_client)


def _namespace(args: argparse.Namespace) -> str:
    if args.namespace:
        return str(args.namespace)
    from kubernetes import config as _config  # noqa: PLC0415

    config: Any = _config  # the client's functions are untyped

    try:
        _, active = config.list_kube_config_contexts(config_file=args.kubeconfig)
    except config.ConfigException:
        return "default"
    if args.context:
        contexts, _ = config.list_kube_config_contexts(config_file=args.kubeconfig)
        active = next((c for c in contexts if c.get("name") == args.context), active)
    return str((active.get("context") or {}).get("namespace") or "default")


def _isvc(kube: Any, ns: str, name: str) -> dict[str, Any]:
    body = kube.get(api.API_VERSION, "InferenceService", ns, name)
    if body is None:
        raise CliError(f"InferenceService {ns}/{name} not found")
    return dict(body)


def cmd_history(args: argparse.Namespace, out: TextIO) -> int:
    kube, ns = _kube(args), _namespace(args)
    mvs = kube.list(api.API_VERSION, "ModelVersion", ns, labels={api.LABEL_MODEL: args.model})
    rows = history_rows(mvs, args.model)
    if not rows:
        raise CliError(f"no ModelVersions of model {args.model!r} in namespace {ns}")
    out.write(table(HISTORY_HEADER, rows))
    return 0


def cmd_lineage(args: argparse.Namespace, out: TextIO) -> int:
    kube, ns = _kube(args), _namespace(args)
    isvc = _isvc(kube, ns, args.isvc)
    serving = (isvc.get("status") or {}).get("servingVersion")
    mv = kube.get(api.API_VERSION, "ModelVersion", ns, serving) if serving else None
    tj_name = ((mv or {}).get("spec") or {}).get("lineage", {}).get("trainingJob")
    tj = kube.get(api.API_VERSION, "TrainingJob", ns, tj_name) if tj_name else None
    out.write(lineage_text(isvc, mv, tj))
    return 0


def cmd_retrain(args: argparse.Namespace, out: TextIO) -> int:
    kube, ns = _kube(args), _namespace(args)
    isvc = _isvc(kube, ns, args.isvc)
    if not (isvc.get("spec") or {}).get("retraining"):
        raise CliError(f"InferenceService {ns}/{args.isvc} has no spec.retraining policy")
    value = args.value or rfc3339.now()
    kube.patch(api.API_VERSION, "InferenceService", ns, args.isvc, retrain_patch(value))
    out.write(f"inferenceservice.kubeloop.io/{args.isvc} retrain requested ({value})\n")
    return 0


def _canary(isvc: Obj) -> tuple[str, bool]:
    """(canary ModelVersion, whether it is the loop's own) or CliError when none runs."""
    spec, status = isvc.get("spec") or {}, isvc.get("status") or {}
    manual = (spec.get("canary") or {}).get("modelVersion")
    if manual:
        return str(manual), False
    loop_mv = (status.get("loopCanary") or {}).get("modelVersion")
    if loop_mv:
        return str(loop_mv), True
    name = (isvc.get("metadata") or {}).get("name")
    raise CliError(f"InferenceService {name} runs no canary")


def cmd_promote(args: argparse.Namespace, out: TextIO) -> int:
    """Promote now: move the alias (alias services) or pin the version (pinned services)."""
    kube, ns = _kube(args), _namespace(args)
    isvc = _isvc(kube, ns, args.isvc)
    mv_name, loop_owned = _canary(isvc)
    ref = (isvc.get("spec") or {}).get("model") or {}
    if ref.get("alias"):
        mv = kube.get(api.API_VERSION, "ModelVersion", ns, mv_name)
        if mv is None:
            raise CliError(f"ModelVersion {ns}/{mv_name} not found")
        aliases = list((mv.get("spec") or {}).get("aliases") or [])
        if ref["alias"] not in aliases:
            kube.patch(
                api.API_VERSION, "ModelVersion", ns, mv_name,
                {"metadata": {"resourceVersion": mv["metadata"]["resourceVersion"]},
                 "spec": {"aliases": [*aliases, ref["alias"]]}},
            )  # fmt: skip
        if not loop_owned:
            # The loop drops its own canary once the alias is confirmed; a manual one is
            # the user's spec, removed here (the old pods stay until the stable rolled out).
            kube.patch(
                api.API_VERSION, "InferenceService", ns, args.isvc, {"spec": {"canary": None}}
            )
        out.write(f"alias {ref['alias']!r} of model {ref.get('model')} -> {mv_name}\n")
    else:
        kube.patch(
            api.API_VERSION, "InferenceService", ns, args.isvc,
            {"spec": {"model": {"modelVersion": mv_name}, "canary": None}},
        )  # fmt: skip
        out.write(f"inferenceservice.kubeloop.io/{args.isvc} now serves {mv_name}\n")
    return 0


def cmd_rollback(args: argparse.Namespace, out: TextIO) -> int:
    kube, ns = _kube(args), _namespace(args)
    isvc = _isvc(kube, ns, args.isvc)
    mv_name, loop_owned = _canary(isvc)
    if loop_owned:
        # Intent on the object (an editor may write it); the loop, which owns the status,
        # rolls the canary back and records the decision as a manual one.
        kube.patch(
            api.API_VERSION, "InferenceService", ns, args.isvc,
            {"metadata": {"annotations": {api.ANNOTATION_ROLLBACK: mv_name}}},
        )  # fmt: skip
        out.write(
            f"inferenceservice.kubeloop.io/{args.isvc} canary {mv_name}: rollback requested"
            f" ({api.ANNOTATION_ROLLBACK}={mv_name})\n"
        )
        return 0
    kube.patch(api.API_VERSION, "InferenceService", ns, args.isvc, {"spec": {"canary": None}})
    out.write(f"inferenceservice.kubeloop.io/{args.isvc} canary {mv_name} rolled back\n")
    return 0


def cmd_ui(args: argparse.Namespace, out: TextIO) -> int:
    """Serve the read-only web page on 127.0.0.1 until interrupted."""
    import webbrowser  # noqa: PLC0415

    from kubeloop.ui import server, source  # noqa: PLC0415

    kube, ns = _kube(args), _namespace(args)
    src = source.Source(kube, ns)
    src.start()
    try:
        httpd = server.serve(server.Pages(src, prometheus=args.prometheus), args.port)
    except OSError as e:
        raise CliError(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror}") from e
    denied = [k for k, ok in src.permitted.items() if not ok]
    out.write(f"Serving Kubeloop's UI for namespace {ns} on {httpd.url}\n")
    if denied:
        out.write(f"Not permitted to list {', '.join(denied)}: not shown\n")
    out.flush()
    if not args.no_open:
        webbrowser.open(httpd.url)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        src.stop()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubectl kubeloop", description="Kubeloop's registry and closed loop from kubectl."
    )
    p.add_argument("-n", "--namespace", help="namespace (default: the context's)")
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    p.add_argument("--context", default=None, help="kubeconfig context")
    sub = p.add_subparsers(dest="command", required=True)
    h = sub.add_parser("history", help="versions of a model, newest first")
    h.add_argument("model")
    h.set_defaults(func=cmd_history)
    for name, func, text in (
        ("lineage", cmd_lineage, "serving version -> training job -> trigger -> dataset"),
        ("promote", cmd_promote, "promote the running canary now"),
        ("rollback", cmd_rollback, "drop the running canary"),
        ("retrain", cmd_retrain, "retrain now (sets the kubeloop.io/retrain annotation)"),
    ):
        sp = sub.add_parser(name, help=text)
        sp.add_argument("isvc", help="InferenceService name")
        if name == "retrain":
            sp.add_argument("--value", help="the annotation value (default: the current time)")
        sp.set_defaults(func=func)
    u = sub.add_parser("ui", help="a local, read-only web page of the registry and the loop")
    u.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free one)")
    u.add_argument("--no-open", action="store_true", help="do not open a browser")
    u.add_argument(
        "--prometheus", default=None, help="Prometheus URL to read drift series from (optional)"
    )
    u.set_defaults(func=cmd_ui)
    # kubectl passes global flags after the subcommand too: accept them there.
    for sp in sub.choices.values():
        sp.add_argument("-n", "--namespace", dest="namespace", default=argparse.SUPPRESS)
    return p


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    args = build_parser().parse_args(argv)
    stream = out if out is not None else sys.stdout
    from kubernetes.client.exceptions import ApiException  # noqa: PLC0415

    try:
        return int(args.func(args, stream))
    except CliError as e:
        sys.stderr.write(f"error: {e}\n")
        return 1
    except ApiException as e:
        sys.stderr.write(f"error: the API server answered {e.status} {e.reason}: {e.body}\n")
        return 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
