"""The UI's model page with 1,000 ModelVersions: load time in a real browser against 300 ms.

Creates N ModelVersions of one model in a fresh namespace of the local control plane
(hack/cluster.sh up; KUBECONFIG), starts ``kubectl kubeloop ui``, opens the model page in
Debian's chromium (Playwright) R times and prints the median page load (navigation start
to the load event, from the browser's Navigation Timing) and the server's render time
(its Server-Timing header). Exits 1 when the median load misses the target.

    python3 bench/ui_load.py [--versions 1000] [--runs 7] [--target-ms 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "operator"), str(REPO / "serving_image")]

from kubernetes import client, config  # noqa: E402
from tests.integration.ui_harness import UIProcess, chromium, model_version  # noqa: E402

from kubeloop.kube import Kube  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--versions", type=int, default=1000)
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--target-ms", type=float, default=300.0)
    args = p.parse_args()
    kubeconfig = Path(os.environ.get("KUBECONFIG", REPO / ".cluster" / "kubeconfig"))
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    kube = Kube(api_client)
    core = client.CoreV1Api(api_client)
    ns = f"bench-ui-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        with ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda v: kube.create(
                        model_version(ns, "iris", v, accuracy=0.8 + (v % 97) / 500)
                    ),
                    range(1, args.versions + 1),
                )
            )
        with (
            tempfile.TemporaryDirectory() as tmp,
            UIProcess(kubeconfig, ns, Path(tmp)) as ui,
            chromium() as browser,
        ):
            page = browser.new_page()
            loads, renders = [], []
            for _ in range(args.runs + 1):  # the first warms the browser's cache
                resp = page.goto(ui.url + "models/iris")
                assert resp is not None and resp.ok
                rows = page.locator("table.versions tbody tr").count()
                assert rows == min(100, args.versions), rows
                nav = page.evaluate(
                    "(() => { const n = performance.getEntriesByType('navigation')[0];"
                    " return n.loadEventEnd - n.startTime; })()"
                )
                timing = resp.headers.get("server-timing", "render;dur=nan")
                loads.append(float(nav))
                renders.append(float(timing.split("dur=")[1]))
            loads, renders = loads[1:], renders[1:]
    finally:
        core.delete_namespace(ns)
    load, render = statistics.median(loads), statistics.median(renders)
    print(f"versions={args.versions} runs={args.runs}")
    print(
        f"page load (browser, median): {load:.0f} ms; target {args.target_ms:.0f} ms; "
        f"ratio {load / args.target_ms:.2f}"
    )
    print(f"server render (median): {render:.1f} ms")
    ok = load <= args.target_ms
    print("PASS" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
