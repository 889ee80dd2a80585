"""Build hook: generate the Open Inference Protocol's gRPC modules before packaging.

Everything else about the distribution is in pyproject.toml. The .proto in
serving_image/kubeloop_runtime/serve/oip/ is the one source; its Python modules (messages,
their type stubs, the service stub) are written beside it by grpcio-tools' protoc on every
build (a wheel, ``pip install .`` in the runtime image, ``pip install -e``), so they always
match the protobuf and grpcio the build installs. They are not committed (.gitignore).

``python3 setup.py protos`` (``make protos``) writes them into the source tree alone, for a
checkout used through PYTHONPATH.
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SOURCE_ROOT = ROOT / "serving_image"
PROTOS = ("kubeloop_runtime/serve/oip/grpc_predict_v2.proto",)


def _outputs(proto: str) -> list[Path]:
    stem = SOURCE_ROOT / proto.removesuffix(".proto")
    return [Path(f"{stem}{suffix}") for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")]


def generate_protos() -> None:
    """Run protoc on each .proto whose generated modules are missing or older than it."""
    from grpc_tools import protoc  # noqa: PLC0415 (a build requirement, not a runtime one)

    include = Path(protoc.__file__).parent / "_proto"
    for proto in PROTOS:
        source = SOURCE_ROOT / proto
        outputs = _outputs(proto)
        mtime = source.stat().st_mtime
        if all(o.exists() and o.stat().st_mtime >= mtime for o in outputs):
            continue
        args = [
            "protoc",
            f"-I{SOURCE_ROOT}",
            f"-I{include}",
            f"--python_out={SOURCE_ROOT}",
            f"--pyi_out={SOURCE_ROOT}",
            f"--grpc_python_out={SOURCE_ROOT}",
            str(source),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {source}")
        print(f"generated {', '.join(o.name for o in outputs)} from {proto}")


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        generate_protos()
        super().run()


if __name__ == "__main__" and sys.argv[1:] == ["protos"]:
    generate_protos()
else:
    setup(cmdclass={"build_py": BuildPyWithProtos})
