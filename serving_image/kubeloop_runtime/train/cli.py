"""``kubeloop-train``: train one model from a TrainingJob spec.

stdout carries exactly one line, the :class:`~kubeloop_runtime.api.TrainingResult` JSON;
logs go to stderr. The same document goes to ``<output>/result.json`` (for every outcome,
a refused spec included, once ``--output`` is usable) and, bounded to 4 KiB, to the
termination message file that the operator reads from the pod status. A run that trained a
model and passed its gate also writes ``<output>/modelversion.yaml``, the ModelVersion
manifest ``kubeloop-serve --model-version`` serves (train and serve without a cluster).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from kubeloop_runtime import api
from kubeloop_runtime.artifacts import ArtifactError
from kubeloop_runtime.train.champion import ENV_CHAMPION, parse_champion
from kubeloop_runtime.train.errors import DataValidationError, InvalidSpecError, TrainError
from kubeloop_runtime.train.output import Output
from kubeloop_runtime.train.result import (
    MODEL_VERSION_FILE,
    failure,
    model_version_manifest,
    termination_message,
    to_json,
    write_termination_log,
)
from kubeloop_runtime.train.spec import parse_spec

log = logging.getLogger("kubeloop_runtime.train")

ENV_SPEC = api.ENV_TRAINING_SPEC
ENV_OUTPUT = api.ENV_OUTPUT
ENV_ARTIFACT_ROOT = api.ENV_ARTIFACT_ROOT
ENV_DATA_ROOT = api.ENV_DATA_ROOT
RESULT_FILE = "result.json"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kubeloop-train",
        description="Train a scikit-learn model from a Kubeloop TrainingJob spec.",
    )
    p.add_argument(
        "--spec",
        help="TrainingJob manifest or bare spec, YAML or JSON; '-' reads stdin"
        f" (default: the {ENV_SPEC} environment variable)",
    )
    p.add_argument(
        "--output",
        default=os.environ.get(ENV_OUTPUT),
        help="directory, file:///abs/dir, pvc://<claim>/<path> or s3://<bucket>/<prefix>"
        " (also gs://, az://) to write the artifacts to"
        f" (default: ${ENV_OUTPUT})",
    )
    p.add_argument(
        "--artifact-root",
        type=Path,
        default=Path(os.environ.get(ENV_ARTIFACT_ROOT, api.ARTIFACT_MOUNT_PATH)),
        help=f"where the artifact PVC is mounted (default: ${ENV_ARTIFACT_ROOT} or"
        f" {api.ARTIFACT_MOUNT_PATH})",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        default=Path(os.environ.get(ENV_DATA_ROOT, api.DATA_MOUNT_PATH)),
        help=f"where ConfigMap and PVC datasets are mounted (default: ${ENV_DATA_ROOT} or"
        f" {api.DATA_MOUNT_PATH})",
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        default=None,
        help="termination message file (default: /dev/termination-log if it is writable)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def _read_spec_text(arg: str | None) -> tuple[str, str]:
    if arg == "-":
        return sys.stdin.read(), "spec from stdin"
    if arg is not None:
        try:
            return Path(arg).read_text(encoding="utf-8"), f"spec file {arg!r}"
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidSpecError(f"cannot read spec file {arg!r}: {e}") from e
    text = os.environ.get(ENV_SPEC)
    if text is None:
        raise InvalidSpecError(f"no spec given: pass --spec FILE (or -) or set {ENV_SPEC}")
    return text, f"${ENV_SPEC}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)

    output = None
    spec: api.TrainingJobSpec | None = None
    try:
        # The output first: every outcome, a refused spec included, is then in result.json.
        if args.output:
            try:
                output = Output.open(args.output, args.artifact_root)
            except (ArtifactError, OSError) as e:
                raise InvalidSpecError(f"--output: {e}") from e
            (output.directory / MODEL_VERSION_FILE).unlink(missing_ok=True)  # never stale
        text, origin = _read_spec_text(args.spec)
        spec = parse_spec(text, origin=origin)
        if output is None:
            raise InvalidSpecError(f"no output given: pass --output or set {ENV_OUTPUT}")
        # Imported here so that a bad spec is reported before scikit-learn loads (seconds).
        from kubeloop_runtime.train.runner import train  # noqa: PLC0415
        from kubeloop_runtime.train.validate import ENV_REFERENCE  # noqa: PLC0415

        champion = parse_champion(os.environ.get(ENV_CHAMPION))
        reference = parse_champion(os.environ.get(ENV_REFERENCE), ENV_REFERENCE)
        result = train(
            spec, output, args.data_root, champion, args.artifact_root, reference=reference
        )
        if not result.succeeded:
            log.warning("%s: %s", result.reason, result.message)
    except DataValidationError as e:
        log.error("%s: %s", e.reason, e)
        result, code = failure(e.reason, str(e), validation=e.validation), e.exit_code
    except TrainError as e:
        log.error("%s: %s", e.reason, e)
        result, code = failure(e.reason, str(e)), e.exit_code
    except Exception as e:
        log.exception("Training failed unexpectedly")
        result, code = failure("TrainingError", f"{type(e).__name__}: {e}"), api.EXIT_UNEXPECTED
    else:
        code = (
            api.EXIT_OK
            if result.succeeded
            else api.EXIT_GATE_FAILED
            if result.reason == api.REASON_QUALITY_GATE_FAILED
            else api.EXIT_UNEXPECTED
        )

    document = to_json(result)
    if output is not None:
        try:
            (output.directory / RESULT_FILE).write_text(document + "\n", encoding="utf-8")
            manifest = None if spec is None else model_version_manifest(spec, result)
            if manifest is not None:
                (output.directory / MODEL_VERSION_FILE).write_text(
                    yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8"
                )
            # In place for a directory or a volume; an upload for an object store.
            output.publish(RESULT_FILE)
            if manifest is not None:
                output.publish(MODEL_VERSION_FILE)
        except (OSError, ArtifactError, TrainError) as e:
            log.warning("Could not write result.json or modelversion.yaml: %s", e)
    write_termination_log(termination_message(result), args.termination_log)
    sys.stdout.write(document + "\n")
    sys.stdout.flush()
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
