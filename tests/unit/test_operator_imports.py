"""The operator image installs only the `operator` extra: no scikit-learn, pandas, numpy.

Importing every handler (what `kubeloop-operator` does at start) must not pull them in;
the ModelVersion controller's artifact checks use only the standard library.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sklearn", "pandas", "numpy", "scipy", "onnxruntime", "skops", "pyarrow")


def test_operator_imports_none_of_the_runtime_dependencies() -> None:
    code = (
        "import sys, kubeloop.handlers, kubeloop.cli, kubeloop_runtime.artifacts\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "", f"the operator imported {out.stdout.strip()}"
