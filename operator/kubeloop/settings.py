"""Operator settings, parsed once at startup from the environment into a frozen object.

Every knob the operator has is here, with its default; its environment variable is
``KUBELOOP_`` and the field's name in capitals (``poll_interval``:
``KUBELOOP_POLL_INTERVAL``), except where a field names another. pydantic-settings reads
them (:meth:`Settings.from_env`); an empty variable counts as unset. Handlers receive the
parsed object through kopf's memo; nothing else reads the environment.

``Settings(...)`` with keywords builds one without reading the environment (tests).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

PREFIX = "KUBELOOP_"


class SettingsError(ValueError):
    """An environment variable holds a value the operator cannot use."""


Port = Annotated[int, Field(ge=0, le=65535)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
    )

    # The one image that trains (kubeloop-train) and serves (kubeloop-serve).
    runtime_image: str = "kubeloop/runtime:0.1.0"
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    # PersistentVolumeClaim holding model artifacts, in each namespace that trains or serves.
    artifact_pvc: str = "kubeloop-artifacts"
    # Where the operator itself can read the artifact store (for sha256 checks); "" = cannot.
    artifact_root: str = ""
    # Object storage defaults for pods whose spec.storage leaves them unset ("" / None:
    # the pod's own environment decides).
    s3_endpoint: str = ""
    s3_region: str = ""
    s3_path_style: bool | None = None
    # Namespaces to watch (comma-separated); empty means cluster-wide.
    namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    metrics_port: Port = 8080
    health_port: Port = 8081
    log_format: Literal["json", "plain"] = "json"  # "json" in the cluster, "plain" on a terminal
    # How often polled work is looked at again (seconds): unfinished training runs and
    # the closed loop's signals, as delayed keys in the work queues.
    poll_interval: float = 10.0
    # kopf tuning (tests shorten these).
    watch_timeout: Annotated[int, Field(ge=1)] = 300
    backoff: float = 5.0
    # How the operator reads serving pods' signals for the closed loop.
    signal_timeout: float = 2.0
    # Reconciles of different objects run in parallel on this many threads per controller.
    workers: Annotated[int, Field(ge=1)] = 4
    # The operator-level resync: every cached object is reconciled again this often
    # (seconds, jittered). A backstop only: watch events drive every reconcile.
    resync_period: float = 600.0
    # Leader election on a coordination.k8s.io Lease (two replicas, one writes).
    leader_election: bool = True
    lease_name: str = "kubeloop-operator"
    # The operator's own namespace (the Downward API's POD_NAMESPACE in the cluster).
    lease_namespace: str = Field(
        "kubeloop-system",
        validation_alias=AliasChoices(f"{PREFIX}LEASE_NAMESPACE", "POD_NAMESPACE"),
    )
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    # This replica's name in the Lease (the pod's name, from the Downward API); "" = the
    # host name and a random suffix.
    identity: str = Field("", validation_alias="POD_NAME")

    @field_validator("namespaces", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(x.strip() for x in value.split(",") if x.strip())
        return value

    # Whether the environment is the source (from_env) or the keywords given (a constructor).
    from_environment: ClassVar[bool] = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (env_settings,) if cls.from_environment else (init_settings,)

    @classmethod
    def from_env(cls) -> Settings:
        """The settings from the process environment (raises SettingsError naming the
        variable)."""
        try:
            read = _FromEnv()
        except ValidationError as e:
            raise SettingsError(_message(e)) from e
        return cls(**dict(read))


class _FromEnv(Settings):
    """:class:`Settings` with the environment as its source (see ``from_env``)."""

    from_environment: ClassVar[bool] = True


def _variables(field: str) -> tuple[str, ...]:
    """The environment variables a field is read from, first match first."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    if isinstance(alias, str):
        return (alias,)
    if isinstance(alias, AliasChoices):
        return tuple(str(c) for c in alias.choices)
    return (f"{PREFIX}{field.upper()}",)


def environment_variables() -> frozenset[str]:
    """Every variable the operator reads (the manifests' env is checked against it)."""
    return frozenset(v for field in Settings.model_fields for v in _variables(field))


def _message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        field = str(err["loc"][0]) if err["loc"] else ""
        parts.append(f"{' or '.join(_variables(field))}={err.get('input')!r}: {err['msg']}")
    return "; ".join(parts)
