"""HTML for each page, from the view models of :mod:`kubeloop.ui.views`: pure.

Server-rendered, semantic HTML (landmarks, captions, ``th scope``, labels) with every value
escaped; charts are inline SVG with a text alternative and the data table beside them. No
inline script or style (the server sends a Content-Security-Policy of ``'self'`` only).

Size (~580 lines): one section per page, over shared escaping and chart helpers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from urllib.parse import quote, urlencode

from kubeloop.ui import views

CURRENT = ' aria-current="page"'
NONE = "\u2013"  # an en dash: no value

# A kind the user may not read: shown as this, never as an error page.
NOT_PERMITTED = "not permitted"


def e(value: object) -> str:
    return escape(str(value), quote=True)


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return NONE
    return f"{v:.4g}"


def _short(sha: str) -> str:
    return sha[:12] if sha else NONE


def link_model(model: str) -> str:
    return f'<a href="/models/{quote(model)}">{e(model)}</a>'


def link_version(name: str) -> str:
    return f'<a href="/versions/{quote(name)}">{e(name)}</a>' if name else NONE


def link_service(name: str) -> str:
    return f'<a href="/services/{quote(name)}">{e(name)}</a>' if name else NONE


def status_badge(status: str, reason: str = "") -> str:
    cls = {"True": "ok", "False": "bad", "GateFailed": "bad"}.get(status, "unknown")
    label = {"True": "Ready", "False": "Not ready", "GateFailed": "Gate failed"}.get(
        status, "Unknown"
    )
    text = f"{label} ({reason})" if reason and status != "True" else label
    return f'<span class="badge {cls}">{e(text)}</span>'


def _aliases(names: Iterable[str], pending: Iterable[str] = ()) -> str:
    parts = [f'<span class="alias">{e(a)}</span>' for a in names]
    parts += [
        f'<span class="alias pending" title="requested, not confirmed">{e(a)}?</span>'
        for a in pending
    ]
    return " ".join(parts) or NONE


def page(
    title: str, body: str, *, namespace: str, current: str, notices: Sequence[str] = ()
) -> str:
    """The whole document around ``body``: skip link, navigation, live-update status."""
    nav = "".join(
        f'<li><a href="{href}"{CURRENT if current == key else ""}>{label}</a></li>'
        for key, href, label in (("models", "/", "Models"), ("services", "/services", "Services"))
    )
    notes = "".join(f'<p class="notice" role="note">{e(n)}</p>' for n in notices)
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · Kubeloop</title>"
        '<link rel="stylesheet" href="/static/ui.css">'
        '<script src="/static/ui.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        '<header><p class="brand">Kubeloop</p>'
        f'<nav aria-label="Main"><ul>{nav}</ul></nav>'
        f'<p class="ns">namespace <strong>{e(namespace)}</strong></p>'
        '<p id="live" class="live" role="status" aria-live="polite"></p></header>'
        f'<main id="main" tabindex="-1">{notes}{body}</main></body></html>'
    )


def not_permitted(what: str, namespace: str) -> str:
    return (
        f'<p class="denied" data-denied="{e(what)}">You are {NOT_PERMITTED} to list {e(what)} '
        f"in namespace {e(namespace)}: nothing of them is shown.</p>"
    )


# ----------------------------------------------------------------------------- models


def models_page(rows: Sequence[views.ModelSummary]) -> str:
    if not rows:
        return "<h1>Models</h1><p>No ModelVersions in this namespace yet.</p>"
    body = "".join(
        "<tr>"
        f'<th scope="row">{link_model(r.model)}</th>'
        f"<td>{r.versions}</td>"
        f"<td>{link_version(r.latest)}</td>"
        f"<td>{' '.join(f'<span class=alias>{e(a)}</span>→{link_version(v)}' for a, v in r.aliases) or NONE}</td>"  # noqa: E501
        f"<td>{e(r.headline[0]) + ' ' + _fmt(r.headline[1]) if r.headline else NONE}</td>"
        "</tr>"
        for r in rows
    )
    return (
        "<h1>Models</h1>"
        "<table><caption>Models in the registry</caption><thead><tr>"
        '<th scope="col">Model</th><th scope="col">Versions</th><th scope="col">Latest</th>'
        '<th scope="col">Aliases</th><th scope="col">Latest metric</th>'
        f"</tr></thead><tbody>{body}</tbody></table>"
    )


def chart(
    metric: str, points: Sequence[tuple[int, float]], *, width: int = 720, height: int = 220
) -> str:
    """A line chart of ``metric`` by version, as inline SVG with a text alternative."""
    if not points:
        return f"<p>No version has {e(metric)}.</p>"
    pad_l, pad_r, pad_t, pad_b = 56, 16, 12, 32
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - 0.5 * (abs(y0) or 1), y1 + 0.5 * (abs(y1) or 1)
    span_x = (x1 - x0) or 1

    def px(x: float) -> float:
        return pad_l + (x - x0) / span_x * (width - pad_l - pad_r)

    def py(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * (height - pad_t - pad_b)

    line = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
    # Dots only while they stay distinguishable; the line carries 1,000 versions alone.
    dots = (
        "".join(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5"><title>v{x}: {e(metric)} '
            f"{_fmt(y)}</title></circle>"
            for x, y in points
        )
        if len(points) <= 120
        else ""
    )
    best = max(points, key=lambda p: p[1])
    worst = min(points, key=lambda p: p[1])
    summary = (
        f"{e(metric)} across {len(points)} versions, from v{x0} ({_fmt(points[0][1])}) to "
        f"v{x1} ({_fmt(points[-1][1])}); highest {_fmt(best[1])} at v{best[0]}, lowest "
        f"{_fmt(worst[1])} at v{worst[0]}"
    )
    axis = (
        f'<line class="axis" x1="{pad_l}" y1="{height - pad_b}" x2="{width - pad_r}" '
        f'y2="{height - pad_b}"/>'
        f'<line class="axis" x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{height - pad_b}"/>'
        f'<text x="{pad_l - 6}" y="{py(y1) + 4:.1f}" text-anchor="end">{_fmt(y1)}</text>'
        f'<text x="{pad_l - 6}" y="{py(y0) + 4:.1f}" text-anchor="end">{_fmt(y0)}</text>'
        f'<text x="{pad_l}" y="{height - 10}">v{x0}</text>'
        f'<text x="{width - pad_r}" y="{height - 10}" text-anchor="end">v{x1}</text>'
    )
    return (
        f'<figure class="chart"><svg role="img" aria-label="{summary}" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}">{axis}'
        f'<polyline class="series" points="{line}"/>{dots}</svg>'
        f"<figcaption>{summary}.</figcaption></figure>"
    )


PAGE_SIZE = 100  # version rows per page: the chart covers every version


def model_page(p: views.ModelPage, *, tj_readable: bool = True, page_no: int = 1) -> str:
    if not p.rows:
        return f"<h1>Model {e(p.model)}</h1><p>No versions of this model.</p>"
    metric_select = "".join(
        f'<option value="{e(m)}"{" selected" if m == p.chart_metric else ""}>{e(m)}</option>'
        for m in p.metric_names
    )
    form = (
        f'<form class="metric" method="get" action="/models/{quote(p.model)}">'
        f'<label for="metric">Metric</label> <select id="metric" name="metric">{metric_select}'
        '</select> <button type="submit">Show</button></form>'
        if p.metric_names
        else ""
    )
    head = (
        '<th scope="col"><span class="vh">Compare</span></th>'
        '<th scope="col">Version</th><th scope="col">Ready</th><th scope="col">Aliases</th>'
        + "".join(f'<th scope="col" class="num">{e(m)}</th>' for m in p.metric_names)
        + "".join(f'<th scope="col">{e(k)}</th>' for k in p.parameter_names)
        + '<th scope="col">Dataset</th><th scope="col">Gate</th>'
        '<th scope="col">Libraries</th><th scope="col">Trained by</th>'
        '<th scope="col">Created</th>'
    )
    pages = max(1, -(-len(p.rows) // PAGE_SIZE))
    page_no = min(max(1, page_no), pages)
    shown = p.rows[(page_no - 1) * PAGE_SIZE : page_no * PAGE_SIZE]
    metric_q = f"&amp;metric={quote(p.chart_metric)}" if p.chart_metric else ""
    pager = (
        '<nav aria-label="Version pages"><ul class="pager">'
        + "".join(
            f'<li><a href="/models/{quote(p.model)}?page={n}{metric_q}"'
            f"{CURRENT if n == page_no else ''}>{n}</a></li>"
            for n in range(1, pages + 1)
        )
        + "</ul></nav>"
        if pages > 1
        else ""
    )
    rows = []
    for r in shown:
        libs = " ".join(f"{k} {v}" for k, v in r.libraries.items()) or NONE
        tj = e(r.training_job) if r.training_job else NONE
        rows.append(
            f'<tr id="{e(r.name)}">'
            f'<td><input type="checkbox" name="v" value="{e(r.name)}" form="compare" '
            f'aria-label="compare {e(r.name)}"></td>'
            f'<th scope="row">{link_version(r.name)}</th>'
            f"<td>{status_badge(r.ready, r.ready_reason)}</td>"
            f"<td>{_aliases(r.aliases, r.requested_aliases)}</td>"
            + "".join(f'<td class="num">{_fmt(r.metrics.get(m))}</td>' for m in p.metric_names)
            + "".join(f"<td>{e(r.parameters.get(k, NONE))}</td>" for k in p.parameter_names)
            + f'<td><code title="{e(r.dataset_sha256)}">{e(_short(r.dataset_sha256))}</code></td>'
            f"<td>{'passed' if r.gate_passed else '<strong class=bad>failed</strong>'}</td>"
            f"<td>{e(libs)}</td><td>{tj if tj_readable else NOT_PERMITTED}</td>"
            f"<td><time>{e(r.created)}</time></td></tr>"
        )
    return (
        f"<h1>Model {e(p.model)}</h1>"
        f"<p>{len(p.rows)} versions, newest first"
        f"{f'; page {page_no} of {pages}' if pages > 1 else ''}.</p>"
        f"<section aria-labelledby=chart-h><h2 id=chart-h>{e(p.chart_metric or 'Metrics')} "
        f"by version</h2>{form}{chart(p.chart_metric, p.points) if p.chart_metric else ''}"
        "</section>"
        '<section aria-labelledby="versions-h"><h2 id="versions-h">Versions side by side</h2>'
        '<form id="compare" method="get" action="/compare"></form>'
        f'<p><button type="submit" form="compare">Compare selected</button></p>'
        '<div class="scroll" tabindex="0" role="region" aria-label="versions table">'
        f'<table class="versions"><caption>Versions of {e(p.model)}</caption><thead><tr>{head}'
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table></div>{pager}</section>"
    )


def compare_page(rows: Sequence[views.VersionRow]) -> str:
    """Selected versions as columns; a row whose values differ is marked."""
    if not rows:
        return "<h1>Compare versions</h1><p>Select versions on a model's page to compare.</p>"
    metric_names = views.metric_order({k for r in rows for k in r.metrics})
    params = sorted({k for r in rows for k in r.parameters})
    libs = sorted({k for r in rows for k in r.libraries})
    lines: list[tuple[str, list[str]]] = [
        ("Aliases", [", ".join(r.aliases) or NONE for r in rows]),
        ("Ready", [r.ready for r in rows]),
        *[(m, [_fmt(r.metrics.get(m)) for r in rows]) for m in metric_names],
        *[(f"param {k}", [r.parameters.get(k, NONE) for r in rows]) for k in params],
        ("Dataset sha256", [_short(r.dataset_sha256) for r in rows]),
        ("Dataset source", [r.dataset_source or NONE for r in rows]),
        (
            "Dataset rows",
            [str(r.dataset_rows) if r.dataset_rows is not None else NONE for r in rows],
        ),
        (
            "Gate",
            [
                ("passed" if r.gate_passed else "failed")
                + (f": {r.gate_message}" if r.gate_message else "")
                for r in rows
            ],
        ),
        *[(k, [r.libraries.get(k, NONE) for r in rows]) for k in libs],
        ("TrainingJob", [r.training_job or NONE for r in rows]),
        ("Trigger", [r.trigger or NONE for r in rows]),
    ]
    head = "".join(f'<th scope="col">{link_version(r.name)}</th>' for r in rows)
    body = "".join(
        f'<tr{" class=differs" if len(set(vals)) > 1 else ""}><th scope="row">{e(label)}'
        f"{' <span class=vh>(differs)</span>' if len(set(vals)) > 1 else ''}</th>"
        + "".join(f"<td>{e(v)}</td>" for v in vals)
        + "</tr>"
        for label, vals in lines
    )
    return (
        "<h1>Compare versions</h1><p>Rows whose values differ are marked.</p>"
        '<table class="compare"><caption>Selected versions side by side</caption>'
        f'<thead><tr><th scope="col">Field</th>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _dl(items: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def lineage_page(p: views.LineagePage, *, tj_readable: bool) -> str:
    r = p.row
    model = r.name.rsplit("-v", 1)[0]
    facts = _dl(
        [
            ("Model", link_model(model)),
            ("Version", e(r.version)),
            ("Ready", status_badge(r.ready, r.ready_reason)),
            ("Aliases", _aliases(r.aliases, r.requested_aliases)),
            ("Task", e(p.task or NONE)),
            ("Metrics", e(", ".join(f"{k} {_fmt(v)}" for k, v in r.metrics.items()) or NONE)),
            ("Parameters", e(", ".join(f"{k}={v}" for k, v in r.parameters.items()) or NONE)),
            (
                "Gate",
                e(
                    ("passed" if r.gate_passed else "failed")
                    + (f": {r.gate_message}" if r.gate_message else "")
                ),
            ),
            ("Libraries", e(" ".join(f"{k} {v}" for k, v in r.libraries.items()) or NONE)),
            (
                "Artifact",
                f"<code>{e(p.artifact_uri)}</code> sha256 "
                f"<code>{e(_short(p.artifact_sha256))}</code>",
            ),
            ("Inputs", e(", ".join(p.inputs) or NONE)),
            ("Served by", " ".join(link_service(s) for s in p.served_by) or NONE),
            ("Previous version", link_version(p.previous)),
        ]
    )
    dataset = _dl(
        [
            ("Source", e(r.dataset_source or NONE)),
            ("sha256", f"<code>{e(r.dataset_sha256 or NONE)}</code>"),
            ("Rows", e(r.dataset_rows if r.dataset_rows is not None else NONE)),
            ("Columns", e(p.dataset_columns if p.dataset_columns is not None else NONE)),
        ]
    )
    if not r.training_job:
        run = "<p>Registered by hand (no TrainingJob in its lineage).</p>"
    elif not tj_readable:
        run = f"<p>TrainingJob {e(r.training_job)}: {NOT_PERMITTED} to read TrainingJobs.</p>"
    elif p.training_job is None:
        run = f"<p>TrainingJob {e(r.training_job)} no longer exists.</p>"
    else:
        tj = p.training_job
        run = _dl(
            [
                ("Name", e(tj.name)),
                ("Succeeded", status_badge(tj.succeeded, tj.reason)),
                ("Message", e(tj.message or NONE)),
                ("Estimator", e(tj.estimator or NONE)),
                ("Champion", link_version(tj.champion)),
                ("Started", f"<time>{e(tj.started or NONE)}</time>"),
                ("Finished", f"<time>{e(tj.finished or NONE)}</time>"),
            ]
        )
    trig = p.trigger
    trigger = (
        _dl(
            [
                ("Signal", e(trig.get("signal", NONE))),
                ("Value", e(trig.get("value", NONE))),
                ("InferenceService", link_service(trig.get("inferenceService", ""))),
                ("Time", f"<time>{e(trig.get('time', NONE))}</time>"),
            ]
        )
        if trig
        else "<p>No trigger: not started by the closed loop.</p>"
    )
    if not tj_readable:
        replaced = f"<p>{NOT_PERMITTED} to read TrainingJobs: replacements unknown.</p>"
    elif p.replaced_by:
        replaced = (
            "<ul>"
            + "".join(
                f"<li>{link_version(x.model_version)} by run {e(x.training_job)}, because "
                f"{e(x.why)}; {e(x.gate or 'no gate message')}; "
                f"{'promoted' if x.promoted else 'not promoted'}</li>"
                for x in p.replaced_by
            )
            + "</ul>"
        )
    else:
        replaced = "<p>No later run was trained against this version.</p>"
    return (
        f"<h1>ModelVersion {e(r.name)}</h1>{facts}"
        '<section aria-labelledby="lin-h"><h2 id="lin-h">Lineage</h2>'
        f'<ol class="lineage"><li><h3>Trigger</h3>{trigger}</li>'
        f"<li><h3>Dataset</h3>{dataset}</li><li><h3>TrainingJob</h3>{run}</li>"
        f"<li><h3>This version</h3><p>{e(r.name)}</p></li>"
        f"<li><h3>Replaced by</h3>{replaced}</li></ol></section>"
    )


# ----------------------------------------------------------------------------- services


def traffic_bar(traffic: Sequence[views.TrafficShare]) -> str:
    """The traffic split as one stacked SVG bar, with the numbers in text too."""
    if not traffic:
        return "<p>No traffic yet.</p>"
    x = 0.0
    parts = []
    for t in traffic:
        w = max(0.0, min(100.0, float(t.percent)))
        parts.append(
            f'<rect class="{"canary" if t.role == "canary" else "stable"}" x="{x:.1f}%" y="0" '
            f'width="{w:.1f}%" height="20"><title>{e(t.model_version)} {t.percent}%</title></rect>'
        )
        x += w
    text = ", ".join(f"{t.model_version} ({t.role}) {t.percent}%" for t in traffic)
    return (
        f'<svg class="traffic" role="img" aria-label="traffic: {e(text)}" width="100%" '
        f'height="20">{"".join(parts)}</svg>'
    )


def services_page(rows: Sequence[views.ServiceSummary]) -> str:
    if not rows:
        return "<h1>InferenceServices</h1><p>No InferenceServices in this namespace.</p>"
    body = "".join(
        f'<tr><th scope="row">{link_service(s.name)}</th><td>{e(s.model_ref)}</td>'
        f"<td>{status_badge(s.ready, s.ready_reason)}</td><td>{link_version(s.serving)}</td>"
        f"<td>{link_version(s.canary)}</td>"
        f"<td>{e(', '.join(f'{t.model_version} {t.percent}%' for t in s.traffic) or NONE)}"
        "</td></tr>"
        for s in rows
    )
    return (
        "<h1>InferenceServices</h1>"
        "<table><caption>InferenceServices and their traffic</caption><thead><tr>"
        '<th scope="col">Name</th><th scope="col">Model</th><th scope="col">Ready</th>'
        '<th scope="col">Serving</th><th scope="col">Canary</th><th scope="col">Traffic</th>'
        f"</tr></thead><tbody>{body}</tbody></table>"
    )


def service_page(p: views.ServicePage, *, tj_readable: bool, events_readable: bool) -> str:
    s = p.summary
    traffic_rows = "".join(
        f'<tr><th scope="row">{link_version(t.model_version)}</th><td>{e(t.role)}</td>'
        f'<td class="num">{t.percent}%</td>'
        f'<td class="num">{t.ready_replicas}/{t.replicas}</td></tr>'
        for t in s.traffic
    )
    conditions = "".join(
        f'<tr><th scope="row">{e(c.type)}</th><td>{e(c.status)}</td><td>{e(c.reason)}</td>'
        f"<td>{e(c.message)}</td></tr>"
        for c in p.conditions
    )
    if p.analysis is None:
        analysis = "<p>No canary analysis yet.</p>"
    else:
        a = p.analysis
        analysis = _dl(
            [
                ("Decision", f'<strong class="decision">{e(a.decision or NONE)}</strong>'),
                ("Canary", link_version(a.model_version)),
                ("Why", e(a.message or NONE)),
                ("When", f"<time>{e(a.time or NONE)}</time>"),
                *[(k, e(v)) for k, v in a.metrics.items()],
            ]
        )
    canary = (
        f"<p>Loop canary {link_version(p.loop_canary)} since "
        f"<time>{e(p.canary_started)}</time>.</p>"
        if p.loop_canary
        else ""
    )
    missing = []
    if not tj_readable:
        missing.append("TrainingJobs")
    if not events_readable:
        missing.append("Events")
    gap = (
        f"<p class=denied>{NOT_PERMITTED} to list {' and '.join(missing)}: the timeline shows "
        "only what the service's status says.</p>"
        if missing
        else ""
    )
    items = "".join(
        f'<li class="tl {e(t.kind)}{" warn" if t.warning else ""}"><time>{e(t.time)}</time> '
        f'<span class="kind">{e(t.kind)}</span> <strong>{e(t.title)}</strong>'
        f"{'<br>' + e(t.detail) if t.detail else ''}</li>"
        for t in p.timeline
    )
    return (
        f"<h1>InferenceService {e(s.name)}</h1>"
        + _dl(
            [
                ("Model", e(s.model_ref)),
                ("Ready", status_badge(s.ready, s.ready_reason)),
                ("Serving", link_version(s.serving)),
                ("Canary", link_version(s.canary)),
                ("Closed loop", "on" if p.retraining else "off"),
            ]
        )
        + '<section aria-labelledby="tr-h"><h2 id="tr-h">Traffic split</h2>'
        + traffic_bar(s.traffic)
        + (
            '<table><caption>Traffic by version</caption><thead><tr><th scope="col">Version</th>'
            '<th scope="col">Role</th><th scope="col">Percent</th><th scope="col">Ready pods</th>'
            f"</tr></thead><tbody>{traffic_rows}</tbody></table>"
            if traffic_rows
            else ""
        )
        + "</section>"
        + f'<section aria-labelledby="an-h"><h2 id="an-h">Canary analysis</h2>{canary}{analysis}'
        "</section>"
        + '<section aria-labelledby="tl-h"><h2 id="tl-h">The loop\'s timeline</h2>'
        + gap
        + (f'<ol class="timeline">{items}</ol>' if items else "<p>Nothing has happened yet.</p>")
        + "</section>"
        + f'<section aria-labelledby="dr-h"><h2 id="dr-h">Drift per feature</h2>'
        f'<div id="drift" data-src="/services/{quote(s.name)}/drift"><p>Asking the serving pods…'
        "</p></div></section>" + '<section aria-labelledby="co-h"><h2 id="co-h">Conditions</h2>'
        '<table><caption>Status conditions</caption><thead><tr><th scope="col">Type</th>'
        '<th scope="col">Status</th><th scope="col">Reason</th><th scope="col">Message</th>'
        f"</tr></thead><tbody>{conditions}</tbody></table></section>"
    )


def drift_fragment(
    pods: Sequence[views.PodDrift],
    prom: Sequence[views.PromDrift] | None,
    *,
    pods_note: str = "",
    prom_note: str = "",
) -> str:
    """The drift section's content: per pod (its /drift document) and, when configured,
    per version from Prometheus."""
    out = []
    if pods_note:
        out.append(f"<p>{e(pods_note)}</p>")
    for d in pods:
        if d.error:
            out.append(f"<p>Pod {e(d.pod)} ({e(d.role)}): {e(d.error)}</p>")
            continue
        rows = "".join(
            f'<tr{" class=drifted" if f.drifted else ""}><th scope="row">{e(f.feature)}</th>'
            f"<td>{e(f.kind)}</td><td>{e(f.test)}</td><td class=num>{f.n}</td>"
            f"<td class=num>{_fmt(f.psi)}</td><td class=num>{_fmt(f.p_value)}</td>"
            f"<td>{'<strong class=bad>drifted</strong>' if f.drifted else 'no'}</td></tr>"
            for f in d.features
        )
        state = (
            f"{'dataset drift' if d.dataset_drift else 'no dataset drift'}, "
            f"{d.share_drifted:.0%} of features drifted"
            if d.enough_data
            else "not enough data in the window yet"
        )
        out.append(
            f'<table class="drift"><caption>Pod {e(d.pod)} ({e(d.role)}): {d.window_count}/'
            f"{d.window_size} rows, {e(state)}</caption><thead><tr>"
            '<th scope="col">Feature</th><th scope="col">Kind</th><th scope="col">Test</th>'
            '<th scope="col">n</th><th scope="col">PSI</th><th scope="col">p-value</th>'
            f'<th scope="col">Drifted</th></tr></thead><tbody>{rows}</tbody></table>'
        )
    if prom_note:
        out.append(f"<p>{e(prom_note)}</p>")
    if prom:
        rows = "".join(
            f'<tr{" class=drifted" if p.drifted else ""}><th scope="row">{e(p.feature)}</th>'
            f"<td>{e(p.version)}</td><td class=num>{_fmt(p.psi)}</td>"
            f"<td class=num>{_fmt(p.p_value)}</td><td>{'drifted' if p.drifted else 'no'}</td></tr>"
            for p in prom
        )
        out.append(
            '<table class="drift"><caption>From Prometheus</caption><thead><tr>'
            '<th scope="col">Feature</th><th scope="col">Version</th><th scope="col">PSI</th>'
            f'<th scope="col">p-value</th><th scope="col">Drifted</th></tr></thead><tbody>{rows}'
            "</tbody></table>"
        )
    return "".join(out) or "<p>No drift data.</p>"


def query(**params: str) -> str:
    return "?" + urlencode(params) if params else ""
