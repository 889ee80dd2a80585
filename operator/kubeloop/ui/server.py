"""The local, read-only web server behind ``kubectl kubeloop ui``.

Binds 127.0.0.1 only and answers GET only. Pages are rendered from the watch-fed caches of
:class:`kubeloop.ui.source.Source` (memory, no API request per page); ``/events`` streams
a ``change`` Server-Sent Event whenever a cached object changes, and the page's few lines
of JavaScript fetch it again. A Host header other than this address is refused (no DNS
rebinding from a web page to the user's credentials); every response carries a
Content-Security-Policy of ``'self'`` and the time spent rendering (``Server-Timing``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from kubeloop.ui import render, source, views

logger = logging.getLogger("kubeloop.ui")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

STATIC = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}

# Server-Sent Events: a comment line this often keeps the stream (and idle proxies) open.
KEEPALIVE_SECONDS = 15.0


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"


def _int(values: list[str] | None, default: int = 1) -> int:
    try:
        return int((values or [str(default)])[0])
    except ValueError:
        return default


def _html(status: int, text: str) -> Response:
    return Response(status, text.encode())


@dataclass
class Pages:
    """Routes to pages: path and query in, a :class:`Response` out (no HTTP here)."""

    src: source.Source
    prometheus: str | None = None

    @property
    def ns(self) -> str:
        return self.src.namespace

    def _page(self, title: str, body: str, current: str) -> Response:
        return _html(200, render.page(title, body, namespace=self.ns, current=current))

    def _not_found(self, what: str) -> Response:
        body = f"<h1>Not found</h1><p>{render.e(what)} is not in namespace {render.e(self.ns)}.</p>"
        return _html(404, render.page("Not found", body, namespace=self.ns, current=""))

    def route(self, path: str, query: dict[str, list[str]]) -> Response:
        parts = [unquote(p) for p in path.strip("/").split("/") if p]
        if not parts:
            return self.models()
        head, rest = parts[0], parts[1:]
        handlers: dict[tuple[str, int], Callable[[], Response]] = {
            ("models", 1): lambda: self.model(
                rest[0], next(iter(query.get("metric") or []), None), _int(query.get("page"))
            ),
            ("compare", 0): lambda: self.compare(query.get("v") or []),
            ("versions", 1): lambda: self.version(rest[0]),
            ("services", 0): self.services,
            ("services", 1): lambda: self.service(rest[0]),
        }
        if head == "services" and len(rest) == 2 and rest[1] == "drift":
            return self.drift(rest[0])
        handler = handlers.get((head, len(rest)))
        return handler() if handler is not None else self._not_found(f"/{path.strip('/')}")

    def _denied(self, kind: str, plural: str) -> str | None:
        return None if self.src.permitted.get(kind) else render.not_permitted(plural, self.ns)

    def models(self) -> Response:
        denied = self._denied("ModelVersion", "ModelVersions")
        body = denied or render.models_page(views.models(self.src.objects("ModelVersion")))
        return self._page("Models", body, "models")

    def model(self, model: str, metric: str | None, page_no: int = 1) -> Response:
        denied = self._denied("ModelVersion", "ModelVersions")
        if denied:
            return self._page(model, denied, "models")
        p = views.model_page(self.src.versions_of(model), model, metric)
        if not p.rows:
            return self._not_found(f"Model {model}")
        tj_readable = bool(self.src.permitted.get("TrainingJob"))
        return self._page(
            f"Model {model}",
            render.model_page(p, tj_readable=tj_readable, page_no=page_no),
            "models",
        )

    def compare(self, names: list[str]) -> Response:
        denied = self._denied("ModelVersion", "ModelVersions")
        if denied:
            return self._page("Compare", denied, "models")
        mvs = [mv for n in names if (mv := self.src.get("ModelVersion", n)) is not None]
        rows = views.compare([views.version_row(mv) for mv in mvs], names)
        return self._page("Compare versions", render.compare_page(rows), "models")

    def version(self, name: str) -> Response:
        denied = self._denied("ModelVersion", "ModelVersions")
        if denied:
            return self._page(name, denied, "models")
        mv = self.src.get("ModelVersion", name)
        if mv is None:
            return self._not_found(f"ModelVersion {name}")
        model = str((mv.get("spec") or {}).get("model") or "")
        p = views.lineage_page(mv, self.src.versions_of(model), self.src.objects("TrainingJob"))
        body = render.lineage_page(p, tj_readable=bool(self.src.permitted.get("TrainingJob")))
        return self._page(f"ModelVersion {name}", body, "models")

    def services(self) -> Response:
        denied = self._denied("InferenceService", "InferenceServices")
        body = denied or render.services_page(views.services(self.src.objects("InferenceService")))
        return self._page("InferenceServices", body, "services")

    def service(self, name: str) -> Response:
        denied = self._denied("InferenceService", "InferenceServices")
        if denied:
            return self._page(name, denied, "services")
        isvc = self.src.get("InferenceService", name)
        if isvc is None:
            return self._not_found(f"InferenceService {name}")
        p = views.service_page(isvc, self.src.objects("TrainingJob"), self.src.objects("Event"))
        body = render.service_page(
            p,
            tj_readable=bool(self.src.permitted.get("TrainingJob")),
            events_readable=bool(self.src.permitted.get("Event")),
        )
        return self._page(f"InferenceService {name}", body, "services")

    def drift(self, name: str) -> Response:
        """The drift section's content (an HTML fragment the page fetches on its own)."""
        if self._denied("InferenceService", "InferenceServices") or not self.src.get(
            "InferenceService", name
        ):
            return _html(404, "<p>No such InferenceService.</p>")
        pods, note = source.drift_of_pods(self.src.kube, self.ns, name)
        prom, prom_note = (
            source.prometheus_drift(self.prometheus, self.ns, name)
            if self.prometheus
            else (None, "")
        )
        return _html(200, render.drift_fragment(pods, prom, pods_note=note, prom_note=prom_note))


def make_handler(pages: Pages) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "kubeloop-ui"

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def _send(self, r: Response, elapsed: float | None = None) -> None:
            self.send_response(r.status)
            self.send_header("Content-Type", r.content_type)
            self.send_header("Content-Length", str(len(r.body)))
            for k, v in SECURITY_HEADERS.items():
                self.send_header(k, v)
            if elapsed is not None:
                self.send_header("Server-Timing", f"render;dur={elapsed * 1000:.1f}")
            self.end_headers()
            self.wfile.write(r.body)

        def do_GET(self) -> None:
            server: Any = self.server
            if self.headers.get("Host", "") not in server.allowed_hosts:
                self._send(Response(421, b"unexpected Host header", "text/plain"))
                return
            url = urlsplit(self.path)
            if url.path == "/events":
                self._events()
                return
            if url.path.startswith("/static/"):
                name = url.path.removeprefix("/static/")
                if name not in STATIC:
                    self._send(Response(404, b"not found", "text/plain"))
                    return
                data = resources.files("kubeloop.ui").joinpath("static", name).read_bytes()
                self._send(Response(200, data, STATIC[name]))
                return
            t0 = time.perf_counter()
            try:
                r = pages.route(url.path, parse_qs(url.query))
            except Exception:
                logger.exception("Failed to render %s", url.path)
                r = _html(500, "<h1>Internal error</h1><p>See the terminal for details.</p>")
            self._send(r, time.perf_counter() - t0)

        def do_POST(self) -> None:
            self._send(Response(HTTPStatus.METHOD_NOT_ALLOWED, b"read-only", "text/plain"))

        do_PUT = do_PATCH = do_DELETE = do_POST  # noqa: N815 (http.server's naming)

        def _events(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            changes = pages.src.changes
            seen = changes.count
            try:
                self.wfile.write(b"retry: 2000\n\n")
                self.wfile.flush()
                while True:
                    count, kind = changes.wait(seen, KEEPALIVE_SECONDS)
                    if count > seen:
                        seen = count
                        self.wfile.write(f"event: change\ndata: {kind}\n\n".encode())
                    else:
                        self.wfile.write(b": keepalive\n\n")
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                self.close_connection = True

    return Handler


class UIServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", port), handler)
        self.port = int(self.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        self.allowed_hosts = frozenset({f"127.0.0.1:{self.port}", f"localhost:{self.port}"})


def serve(pages: Pages, port: int) -> UIServer:
    """The server, bound to 127.0.0.1:``port`` (0: any free port); call serve_forever()."""
    return UIServer(port, make_handler(pages))
