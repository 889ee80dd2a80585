"""The controllers: one module per kind, each a reconcile keyed by (namespace, name).

``handlers.startup`` registers the operator's lifecycle with kopf (startup, cleanup,
liveness); :mod:`kubeloop.manager` wires the informers, work queues and leader election.
"""
