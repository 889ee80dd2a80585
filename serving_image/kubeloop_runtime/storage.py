"""Object storage: ``s3://``, ``gs://`` and ``az://`` URIs, through obstore.

Every object-store read and write of Kubeloop goes through this module: training output,
serving input, the ONNX graph, reference statistics, hold-out rows and datasets.
:class:`ObjectStore` is the :class:`~kubeloop_runtime.artifacts.ArtifactStore` of these
schemes (``artifacts.store_for`` picks it), so the callers of ``file://`` and ``pvc://``
do not change.

Why obstore (docs/storage.md): one wheel (16 MB installed, no Python dependencies) on
Rust's ``object_store``, with S3 (AWS, versitygw, Ceph, R2, GCS interoperability), Google
Cloud Storage and Azure Blob; streaming reads in chunks, multipart uploads from a file, the
AWS credential chain (keys, web identity, instance and container roles) read from the
standard environment variables. boto3 with botocore is twice that size and S3 only; s3fs
adds fsspec, aiobotocore and aiohttp on top of botocore.

Configuration is the standard environment of each provider (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``,
``AWS_VIRTUAL_HOSTED_STYLE_REQUEST``, ``AWS_WEB_IDENTITY_TOKEN_FILE``...; ``GOOGLE_*``,
``AZURE_*``), which the operator sets in pods from ``spec.storage`` and a Secret. A caller
may pass such a mapping instead of the process environment (the operator does, with a
Secret's values, to observe a dataset's version). Values are never logged: errors name the
URI, the endpoint and the cause only.

Size (~520 lines): one client for three providers (locations, credentials, streamed reads
and writes, versions, errors), one section each, behind the small surface the trainer, the
server and the operator use.

Integrity: :func:`download` hashes while it streams to a temporary file beside the
destination and renames it only when the digest is the expected one, so a changed object
is refused and an artifact is never held in memory (chunks of :data:`CHUNK` bytes).

Size (~440 lines): one seam kept whole; the store, the streaming download with its
integrity check, uploads and URI parsing share one mapping of obstore's errors to ours.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import obstore
import obstore.exceptions as obx
from obstore.store import AzureStore, GCSStore, S3Store

from kubeloop_runtime.artifacts import ArtifactError, ArtifactIntegrityError

SCHEMES = ("s3", "gs", "az")
CHUNK = 8 << 20  # streaming read size and multipart part size
_PREFIXES = {"s3": "aws_", "gs": "google_", "az": "azure_"}

# obstore raises its own types, and FileNotFoundError / PermissionError for some.
_FAILURES = (obx.BaseError, FileNotFoundError, PermissionError, ConnectionError, TimeoutError)
# A few quick retries: a wrong endpoint must fail in seconds, not in minutes.
_RETRY: dict[str, Any] = {
    "max_retries": 3,
    "retry_timeout": dt.timedelta(seconds=20),
    "backoff": {
        "init_backoff": dt.timedelta(milliseconds=100),
        "max_backoff": dt.timedelta(seconds=5),
        "base": 2,
    },
}

Cause = Literal["NoSuchBucket", "NoSuchKey", "AccessDenied", "Unreachable", "InvalidURI", "Error"]


# The CamelCase reason of each cause, for the conditions of whoever reports it (the
# TrainingJob's Succeeded, the InferenceService's ModelLoaded).
REASONS: dict[Cause, str] = {
    "NoSuchBucket": "BucketNotFound",
    "NoSuchKey": "ObjectNotFound",
    "AccessDenied": "StorageAccessDenied",
    "Unreachable": "StorageUnreachable",
    "InvalidURI": "InvalidSpec",
    "Error": "StorageError",
}


class StorageError(ArtifactError):
    """An object store refused or could not serve a request; ``cause`` says which way."""

    def __init__(self, message: str, cause: Cause) -> None:
        super().__init__(message)
        self.cause: Cause = cause

    @property
    def reason(self) -> str:
        return REASONS[self.cause]

    def for_field(self, field: str, credentials: str) -> str:
        """The message naming the spec ``field`` the request served and, when access was
        denied, the field the credentials come from."""
        text = f"{field}: {self}"
        if self.cause == "AccessDenied":
            text += f" ({credentials} or the pod's identity)"
        return text


@dataclass(frozen=True)
class Location:
    """``<scheme>://<bucket>/<key>``; ``key`` is empty for a bucket's root."""

    scheme: str
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else self.root

    @property
    def root(self) -> str:
        return f"{self.scheme}://{self.bucket}"

    def child(self, name: str) -> Location:
        key = f"{self.key.rstrip('/')}/{name}" if self.key else name
        return Location(self.scheme, self.bucket, key.lstrip("/"))


def is_object_uri(uri: str) -> bool:
    return urlsplit(uri).scheme in SCHEMES


def parse(uri: str) -> Location:
    """Split an object URI; refuses other schemes, a missing bucket and ``..``."""
    parts = urlsplit(uri)
    if parts.scheme not in SCHEMES:
        raise StorageError(
            f"not an object-store URI: {uri!r} (expected {', '.join(s + '://' for s in SCHEMES)})",
            "InvalidURI",
        )
    if not parts.netloc:
        raise StorageError(
            f"{uri!r} names no bucket: {parts.scheme}://<bucket>/<key>", "InvalidURI"
        )
    if parts.query or parts.fragment:
        raise StorageError(f"object URIs take no query or fragment: {uri!r}", "InvalidURI")
    key = parts.path.lstrip("/")
    if ".." in key.split("/") or "\x00" in key:
        raise StorageError(f"object URI must not contain '..': {uri!r}", "InvalidURI")
    return Location(parts.scheme, parts.netloc, key)


# ------------------------------------------------------------------------------ clients


# The variables a caller's mapping may carry (the process environment is read by obstore
# itself, which ignores what it does not know, such as AWS_CA_BUNDLE).
_KEYS = {
    "s3": (
        "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_endpoint_url",
        "aws_endpoint", "aws_region", "aws_default_region", "aws_virtual_hosted_style_request",
        "aws_skip_signature", "aws_request_payer",
    ),
    "gs": (
        "google_service_account", "google_service_account_key", "google_application_credentials",
    ),
    "az": (
        "azure_storage_account_name", "azure_storage_account_key", "azure_storage_sas_key",
        "azure_storage_client_id", "azure_storage_client_secret", "azure_storage_tenant_id",
        "azure_storage_endpoint", "azure_storage_use_emulator",
    ),
}  # fmt: skip


def _config(scheme: str, env: Mapping[str, str]) -> dict[str, str]:
    """The provider's variables from ``env`` as obstore config keys (``aws_region``...)."""
    known = _KEYS[scheme]
    return {k.lower(): v for k, v in env.items() if k.lower() in known and v != ""}


def endpoint_of(env: Mapping[str, str]) -> str:
    return env.get("AWS_ENDPOINT_URL") or env.get("AWS_ENDPOINT") or ""


@lru_cache(maxsize=64)
def _client(
    scheme: str, bucket: str, items: tuple[tuple[str, str], ...], from_process: bool
) -> Any:
    env = dict(items)
    config = {} if from_process else _config(scheme, env)
    # http:// endpoints (a local S3 server) need the client told; https stays the default.
    options: dict[str, Any] = {"connect_timeout": "10s", "timeout": "300s"}
    if scheme == "s3" and endpoint_of(env).startswith("http://"):
        options["allow_http"] = True
    if scheme == "s3":
        return S3Store(bucket, config=config, client_options=options, retry_config=_RETRY)  # type: ignore[arg-type]
    if scheme == "gs":
        return GCSStore(bucket, config=config, client_options=options, retry_config=_RETRY)  # type: ignore[arg-type]
    return AzureStore(bucket, config=config, client_options=options, retry_config=_RETRY)  # type: ignore[arg-type]


def client(loc: Location, env: Mapping[str, str] | None = None) -> Any:
    """The obstore store of ``loc``'s bucket, configured from ``env`` (default: os.environ)."""
    source = os.environ if env is None else env
    prefix = _PREFIXES[loc.scheme]
    items = tuple(sorted((k, v) for k, v in source.items() if k.lower().startswith(prefix)))
    try:
        return _client(loc.scheme, loc.bucket, items, env is None)
    except _FAILURES as e:
        raise StorageError(
            f"{loc.root}: the object store is misconfigured: {_first_line(e)}", "Error"
        ) from e


# ------------------------------------------------------------------------------ errors


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


_DENIED_CODES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "AccessDenied")


def describe(e: BaseException, loc: Location, env: Mapping[str, str] | None = None) -> StorageError:
    """A :class:`StorageError` for what went wrong, naming the URI and the cause."""
    text = str(e)
    where = endpoint_of(os.environ if env is None else env) or f"the {loc.scheme} default endpoint"
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return StorageError(
            f"bucket {loc.bucket!r} does not exist ({loc.uri} at {where})", "NoSuchBucket"
        )
    if isinstance(e, obx.NotFoundError | FileNotFoundError) or "NoSuchKey" in text:
        return StorageError(f"object {loc.uri} does not exist (at {where})", "NoSuchKey")
    if isinstance(e, obx.PermissionDeniedError | obx.UnauthenticatedError | PermissionError) or any(
        code in text for code in (*_DENIED_CODES, "403 Forbidden")
    ):
        code = next((c for c in _DENIED_CODES if c in text), "AccessDenied")
        return StorageError(
            f"access to {loc.uri} denied ({code} at {where}): check the credentials",
            "AccessDenied",
        )
    if any(
        word in text
        for word in ("error sending request", "Connection refused", "dns error", "timed out")
    ):
        return StorageError(f"cannot reach {where} for {loc.uri}: {_first_line(e)}", "Unreachable")
    return StorageError(f"{loc.uri} (at {where}): {_first_line(e)}", "Error")


# ------------------------------------------------------------------------------ operations


@dataclass(frozen=True)
class ObjectInfo:
    uri: str
    size: int
    etag: str


def head(uri: str, env: Mapping[str, str] | None = None) -> ObjectInfo:
    loc = parse(uri)
    try:
        meta = obstore.head(client(loc, env), loc.key)
    except _FAILURES as e:
        err = describe(e, loc, env)
        if err.cause == "NoSuchKey":  # a HEAD's 404 has no body: is the bucket there?
            probe(loc.root, env)
        raise err from e
    return ObjectInfo(uri=loc.uri, size=int(meta["size"]), etag=str(meta.get("e_tag") or ""))


def list_prefix(uri: str, env: Mapping[str, str] | None = None) -> list[ObjectInfo]:
    """Every object under ``uri`` (a prefix), sorted by key."""
    loc = parse(uri)
    prefix = loc.key.rstrip("/") + "/" if loc.key else None
    out: list[ObjectInfo] = []
    try:
        for batch in obstore.list(client(loc, env), prefix=prefix):
            for meta in batch:
                out.append(
                    ObjectInfo(
                        uri=f"{loc.root}/{meta['path']}",
                        size=int(meta["size"]),
                        etag=str(meta.get("e_tag") or ""),
                    )
                )
    except _FAILURES as e:
        raise describe(e, loc, env) from e
    return sorted(out, key=lambda o: o.uri)


def _chunks(loc: Location, env: Mapping[str, str] | None) -> Iterator[memoryview]:
    try:
        result = obstore.get(client(loc, env), loc.key)
        for chunk in result.stream(min_chunk_size=CHUNK):
            yield memoryview(chunk)
    except _FAILURES as e:
        raise describe(e, loc, env) from e


def download(
    uri: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[str, int]:
    """Stream ``uri`` into ``dest`` (atomically), hashing as it goes: (sha256, size).

    With ``expected_sha256``, a different digest raises :class:`ArtifactIntegrityError`
    and ``dest`` is left untouched.
    """
    loc = parse(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in _chunks(loc, env):
                digest.update(chunk)
                fh.write(chunk)
                size += len(chunk)
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.lower():
            raise ArtifactIntegrityError(
                f"sha256 of {uri} is {actual}, expected {expected_sha256}; the object was"
                " modified or corrupted"
            )
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return actual, size


def upload(local: Path, uri: str, env: Mapping[str, str] | None = None) -> None:
    """Stream a local file to ``uri`` (multipart above :data:`CHUNK` bytes)."""
    loc = parse(uri)
    try:
        obstore.put(client(loc, env), loc.key, local, chunk_size=CHUNK, max_concurrency=4)
    except _FAILURES as e:
        raise describe(e, loc, env) from e


def probe(uri: str, env: Mapping[str, str] | None = None) -> None:
    """Fail early when the bucket is missing or the credentials do not reach it."""
    loc = parse(uri)
    prefix = loc.key.rstrip("/") + "/" if loc.key else None
    try:
        obstore.list_with_delimiter(client(loc, env), prefix=prefix)
    except _FAILURES as e:
        raise describe(e, loc, env) from e


def fingerprint(objects: list[ObjectInfo]) -> str:
    """The version of a set of objects: sha256 over their URIs, sizes and ETags."""
    digest = hashlib.sha256()
    for o in objects:
        digest.update(f"{o.uri}\x1f{o.size}\x1f{o.etag}\x1e".encode())
    return digest.hexdigest()


def make_bucket(uri: str, env: Mapping[str, str] | None = None) -> bool:
    """Create the bucket of an ``s3://`` URI on an S3-compatible endpoint (path style):
    True when it was made, False when it was there already.

    obstore has no call for it, so this is one SigV4-signed ``PUT /<bucket>`` with the
    standard variables (``AWS_ENDPOINT_URL`` is required: on AWS itself, use its tools).
    """
    import hmac  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    loc = parse(uri)
    source = os.environ if env is None else env
    endpoint = endpoint_of(source).rstrip("/")
    if loc.scheme != "s3" or not endpoint:
        raise StorageError(f"{uri}: making a bucket needs s3:// and AWS_ENDPOINT_URL", "InvalidURI")
    access, secret = source.get("AWS_ACCESS_KEY_ID", ""), source.get("AWS_SECRET_ACCESS_KEY", "")
    region = source.get("AWS_REGION") or source.get("AWS_DEFAULT_REGION") or "us-east-1"
    parts = urlsplit(endpoint)
    path = f"{parts.path}/{loc.bucket}"
    now = dt.datetime.now(dt.UTC)
    stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    empty = hashlib.sha256(b"").hexdigest()
    headers = {"host": parts.netloc, "x-amz-content-sha256": empty, "x-amz-date": stamp}
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        ["PUT", path, "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "", signed, empty]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = f"AWS4{secret}".encode()
    for part in (day, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    auth = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={signed},"
        f" Signature={signature}"
    )
    request = urllib.request.Request(
        f"{parts.scheme}://{parts.netloc}{path}",
        method="PUT",
        headers={**headers, "Authorization": auth},
    )
    try:
        with urllib.request.urlopen(request, timeout=20):
            return True
    except urllib.error.HTTPError as e:
        body = e.read().decode(errors="replace")
        if "BucketAlreadyOwnedByYou" in body or "BucketAlreadyExists" in body:
            return False
        raise describe(RuntimeError(f"{e.code} {body}"), loc, source) from e
    except OSError as e:
        raise describe(RuntimeError(f"error sending request: {e}"), loc, source) from e


# ------------------------------------------------------------------------------ the store


def _cache_dir() -> Path:
    return (
        Path(os.environ.get("KUBELOOP_OBJECT_CACHE") or tempfile.gettempdir()) / "kubeloop-objects"
    )


class ObjectStore:
    """An :class:`~kubeloop_runtime.artifacts.ArtifactStore` over a bucket prefix.

    ``put`` uploads; ``resolve`` downloads into a local cache (``$KUBELOOP_OBJECT_CACHE``
    or the temporary directory) and returns the file, which the caller then verifies
    against the recorded sha256 before it reads it; ``workdir`` is a local staging
    directory where a run writes its files before they are published.
    """

    def __init__(self, loc: Location) -> None:
        self.loc = Location(loc.scheme, loc.bucket, loc.key.strip("/"))

    @classmethod
    def from_uri(cls, uri: str, artifact_root: Path | None = None) -> ObjectStore:
        del artifact_root  # object URIs name their bucket
        return cls(parse(uri))

    @property
    def base_uri(self) -> str:
        return self.loc.uri.rstrip("/")

    def uri_for(self, key: str) -> str:
        rel = PurePosixPath(key)
        if rel.is_absolute() or ".." in rel.parts or not key:
            raise ArtifactError(f"artifact key must be a relative path, got {key!r}")
        return self.loc.child(str(rel)).uri

    def _local(self, uri: str) -> Path:
        loc = parse(uri)
        tag = hashlib.sha256(loc.root.encode()).hexdigest()[:12]
        return _cache_dir() / loc.scheme / tag / (loc.key or "_root")

    def workdir(self) -> Path:
        return self._local(self.base_uri).with_name(self._local(self.base_uri).name + ".staging")

    def put(self, local: Path, key: str) -> str:
        uri = self.uri_for(key)
        upload(local, uri)
        return uri

    def resolve(self, uri: str) -> Path:
        loc = parse(uri)
        if (loc.scheme, loc.bucket) != (self.loc.scheme, self.loc.bucket):
            raise ArtifactError(f"{uri!r} is not in {self.loc.root}")
        dest = self._local(uri)
        download(uri, dest)
        return dest

    def probe(self) -> None:
        probe(self.base_uri)


# ------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    """``python -m kubeloop_runtime.storage put|get|ls|mb``: the same client, by hand.

    It reads the standard environment (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``...), as
    the pods do; handy to upload a dataset where no other S3 client is installed.
    """
    import argparse  # noqa: PLC0415
    import sys  # noqa: PLC0415

    p = argparse.ArgumentParser(prog="python -m kubeloop_runtime.storage")
    sub = p.add_subparsers(dest="command", required=True)
    put = sub.add_parser("put", help="upload a local file to an object URI")
    put.add_argument("local", type=Path)
    put.add_argument("uri")
    get = sub.add_parser("get", help="download an object to a local file")
    get.add_argument("uri")
    get.add_argument("local", type=Path)
    ls = sub.add_parser("ls", help="list the objects under a prefix")
    ls.add_argument("uri")
    mb = sub.add_parser("mb", help="make an s3:// bucket (S3-compatible endpoints)")
    mb.add_argument("uri")
    args = p.parse_args(argv)
    try:
        if args.command == "put":
            upload(args.local, args.uri)
            print(f"{args.uri} {hashlib.sha256(args.local.read_bytes()).hexdigest()}")
        elif args.command == "get":
            sha, size = download(args.uri, args.local)
            print(f"{args.local} {size} {sha}")
        elif args.command == "mb":
            made = make_bucket(args.uri)
            print(f"{parse(args.uri).root} {'made' if made else 'already there'}")
        else:
            for o in list_prefix(args.uri if args.uri.endswith("/") else args.uri + "/"):
                print(f"{o.uri} {o.size} {o.etag}")
    except (StorageError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
