"""``kubectl kubeloop ui``: a local, read-only web page of the registry and the closed loop.

Layers, as in the rest of the operator:

- ``views``: objects (plain dicts) -> what each page shows (frozen dataclasses). Pure.
- ``render``: view models -> HTML and inline SVG. Pure.
- ``source``: the I/O. The user's own kubeconfig, one watch-fed cache per kind the user may
  list (a SelfSubjectAccessReview decides), drift through the API server's pod proxy and,
  when configured, Prometheus.
- ``server``: routes (``Pages``) and the 127.0.0.1-only HTTP server with Server-Sent Events.
- ``static/``: the stylesheet and a few KB of JavaScript (live refresh, the drift section).

No component runs in the cluster and no RBAC is added: the page shows what the user's
credentials may read, like ``kubectl proxy``. See docs/ui.md.
"""
