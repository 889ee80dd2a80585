# Kubeloop: the commands a developer runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: help up down deps build build-control-plane cluster-up cluster-down node-up node-down crds lint test test-unit test-integration bench kind-up kind-down

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

up: ## The main job, no Docker needed: local cluster with a real node, Kubeloop, Prometheus, iris trained and served, a prediction
	hack/up.sh

down: ## Tear down everything `make up` started
	hack/down.sh

deps: ## Install the Python and Debian packages the tests need
	hack/install-deps.sh

build-control-plane: ## Build kube-apiserver, etcd, controller-manager, scheduler, kubectl, kubelet, kube-proxy and kwok (cached)
	hack/build-control-plane.sh >/dev/null

cluster-up: ## Start the local control plane (prints the KUBECONFIG to use)
	hack/cluster.sh up

cluster-down: ## Stop the local control plane
	hack/cluster.sh down

node-up: ## Start the real node (kubelet, containerd, kube-proxy) and import the images (root)
	hack/node.sh up

node-down: ## Stop the real node and remove every pod, mount, cgroup, bridge and rule it made
	hack/node.sh down

crds: ## Generate crds/ from the pydantic models (kubeloop_runtime.api, kubeloop_runtime.resources)
	$(PYTHON) -m kubeloop_runtime.crdgen

lint: ## ruff, formatting, mypy --strict, the import-layer contracts, crds/ as generated
	ruff check .
	ruff format --check .
	mypy
	lint-imports
	$(PYTHON) -m kubeloop_runtime.crdgen --check

build: ## Build the local cluster's binaries and images side by side (cached)
	hack/build.sh

test: deps build lint ## Everything CI runs: deps, the local cluster's build, lint, types and the whole suite
	hack/run-tests.sh $(PYTEST_ARGS)

test-unit: ## Unit tests only (no cluster)
	$(PYTHON) -m pytest tests/unit $(PYTEST_ARGS)

bench: ## The benchmarks (training overhead, serving throughput vs KServe and MLServer)
	$(PYTHON) bench/train_bench.py
	$(PYTHON) bench/serve_bench.py

kind-up: ## Create a kind cluster with Kubeloop, Prometheus and Grafana (needs Docker and kind); OBJECTSTORE=1 adds an S3 store
	OBJECTSTORE="$(OBJECTSTORE)" hack/kind-up.sh

kind-down: ## Delete the kind cluster
	hack/kind-down.sh
