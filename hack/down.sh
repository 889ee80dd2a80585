#!/usr/bin/env bash
# Tears down what `make up` started: the real node (every pod, mount, cgroup, bridge and
# iptables rule it made) and the local control plane with its data.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" -eq 0 ]; then
  "${here}/node.sh" down
fi
"${here}/cluster.sh" down
