"""Operator settings from the environment (pydantic-settings): names, defaults, errors."""

from __future__ import annotations

import pytest

from kubeloop.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    import os

    for name in list(os.environ):
        if name.startswith("KUBELOOP_") or name in ("POD_NAME", "POD_NAMESPACE"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_defaults(clean: pytest.MonkeyPatch) -> None:
    assert Settings.from_env() == Settings()
    assert Settings().namespaces == () and Settings().lease_namespace == "kubeloop-system"


def test_every_kind_of_value(clean: pytest.MonkeyPatch) -> None:
    for name, value in {
        "KUBELOOP_RUNTIME_IMAGE": "example/runtime:2",
        "KUBELOOP_IMAGE_PULL_POLICY": "Never",
        "KUBELOOP_NAMESPACES": " ml, shop ,,",
        "KUBELOOP_S3_PATH_STYLE": "true",
        "KUBELOOP_METRICS_PORT": "9090",
        "KUBELOOP_POLL_INTERVAL": "0.5",
        "KUBELOOP_LEADER_ELECTION": "false",
        "KUBELOOP_S3_REGION": "",  # empty: the default
        "POD_NAMESPACE": "ops",
        "POD_NAME": "kubeloop-0",
    }.items():
        clean.setenv(name, value)
    s = Settings.from_env()
    assert type(s) is Settings
    assert (s.runtime_image, s.image_pull_policy) == ("example/runtime:2", "Never")
    assert s.namespaces == ("ml", "shop")
    assert s.s3_path_style is True and s.s3_region == ""
    assert (s.metrics_port, s.poll_interval, s.leader_election) == (9090, 0.5, False)
    assert (s.lease_namespace, s.identity) == ("ops", "kubeloop-0")
    # Our own variable wins over the Downward API's namespace.
    clean.setenv("KUBELOOP_LEASE_NAMESPACE", "leases")
    assert Settings.from_env().lease_namespace == "leases"


def test_keywords_never_read_the_environment(clean: pytest.MonkeyPatch) -> None:
    clean.setenv("KUBELOOP_WORKERS", "9")
    assert Settings(runtime_image="x").workers == 4


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("KUBELOOP_WORKERS", "0", "KUBELOOP_WORKERS='0'"),
        ("KUBELOOP_WATCH_TIMEOUT", "soon", "KUBELOOP_WATCH_TIMEOUT='soon'"),
        ("KUBELOOP_LOG_FORMAT", "xml", "'json' or 'plain'"),
        ("KUBELOOP_IMAGE_PULL_POLICY", "Sometimes", "KUBELOOP_IMAGE_PULL_POLICY"),
        ("KUBELOOP_LEADER_ELECTION", "maybe", "KUBELOOP_LEADER_ELECTION"),
        ("POD_NAMESPACE", "", None),
    ],
)
def test_bad_values_name_the_variable(
    clean: pytest.MonkeyPatch, name: str, value: str, fragment: str | None
) -> None:
    clean.setenv(name, value)
    if fragment is None:  # empty: unset, not an error
        assert Settings.from_env().lease_namespace == "kubeloop-system"
        return
    with pytest.raises(SettingsError, match=fragment):
        Settings.from_env()
