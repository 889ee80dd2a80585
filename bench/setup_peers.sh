#!/usr/bin/env bash
# Install the peer model servers the serving benchmark compares against, each in its
# own virtualenv (their pins conflict with ours and with each other). PyPI only.
#
#   bash bench/setup_peers.sh            # venvs under ~/.cache/kubeloop/bench-venvs/
#
# The peers load the same joblib file as our server, so they get the scikit-learn,
# numpy and joblib versions of the Python that runs this script.
set -euo pipefail

ROOT="${KUBELOOP_BENCH_VENVS:-$HOME/.cache/kubeloop/bench-venvs}"
PY="${PYTHON:-python3}"
SKLEARN="$("$PY" -c 'import sklearn; print(sklearn.__version__)')"
NUMPY="$("$PY" -c 'import numpy; print(numpy.__version__)')"
# The booster scenario's joblib file unpickles an XGBClassifier: the same XGBoost.
XGBOOST="$("$PY" -c 'import xgboost; print(xgboost.__version__)')"
mkdir -p "$ROOT"

make_venv() {
    local name="$1"; shift
    local dir="$ROOT/$name"
    if [[ -x "$dir/bin/python" ]] && "$dir/bin/python" -c "import sklearn, xgboost; assert sklearn.__version__ == '$SKLEARN'" 2>/dev/null \
        && [[ -f "$dir/.kubeloop-ok" ]]; then
        echo "$name: already installed in $dir"
        return
    fi
    rm -rf "$dir"
    "$PY" -m venv "$dir"
    "$dir/bin/pip" install --quiet --upgrade pip
    "$dir/bin/pip" install --quiet "$@" "scikit-learn==$SKLEARN" "numpy==$NUMPY" joblib \
        "xgboost-cpu==$XGBOOST"
    touch "$dir/.kubeloop-ok"
    echo "$name: installed in $dir"
}

# KServe's Python model server (the sklearnserver is not on PyPI; the benchmark uses the
# documented custom-model route: a kserve.Model subclass served by kserve.ModelServer).
make_venv kserve "kserve==0.21.*"
# MLServer with its scikit-learn runtime; it starts only with uvloop < 0.22.
make_venv mlserver "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "uvloop<0.22"
