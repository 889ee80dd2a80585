"""kopf registration: thin handlers that parse, call pure code, call kube.py, write status.

Importing this package registers every handler with kopf's default registry.
"""

from kubeloop.handlers import startup  # noqa: F401

# Controllers register themselves on import; each module is one kind.
for _mod in ("trainingjob", "modelversion", "inferenceservice", "loop", "objects"):
    try:
        __import__(f"kubeloop.handlers.{_mod}")
    except ModuleNotFoundError as _e:  # a controller not written yet
        if _e.name != f"kubeloop.handlers.{_mod}":
            raise
