"""`kubeloop-operator`: runs the Kubeloop controllers on kopf.

Watches the namespaces in KUBELOOP_NAMESPACES (comma-separated), or the whole cluster when
it is empty. Several replicas may run: they elect a leader on a Lease (kubeloop.leader),
and only the leader reconciles; kopf's own peering is off.
"""

from __future__ import annotations

import logging
import sys

import kopf

from kubeloop import logs
from kubeloop.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    del argv  # configuration comes from the environment (see settings.py)
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        sys.stderr.write(f"kubeloop-operator: invalid settings: {e}\n")
        return 2
    logs.configure(settings.log_format)
    # Importing the startup module registers the lifecycle with kopf's default registry.
    import kubeloop.handlers.startup  # noqa: F401, PLC0415

    logging.getLogger("kubeloop").info(
        "Starting operator (namespaces: %s)", ", ".join(settings.namespaces) or "all"
    )
    kopf.run(
        standalone=True,
        clusterwide=not settings.namespaces,
        namespaces=list(settings.namespaces),
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        memo=kopf.Memo(settings=settings),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
