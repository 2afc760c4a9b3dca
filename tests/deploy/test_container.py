"""The container image's Dockerfile, read as proof (no Docker engine runs here): it lints clean
with hadolint, and its final stage is what docs/deploy.md says: the package from its wheel in
a virtualenv, a non-root user, no compiler or pip cache, the health endpoint as HEALTHCHECK,
``ama-stream`` as entry point, configuration from AMA_* variables only.

That the wheel it installs works from an unrelated folder, and that the entry point's and the
manifests' command lines parse, is tests/test_wheel.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from deploy_support import DOCKERFILE, final_stage, image_instruction, instructions


def env_of(stage: list[Any]) -> dict[str, str]:
    pairs = [c.value for c in stage if c.cmd == "ENV"]
    return {k: v for value in pairs for k, v in zip(value[::2], value[1::2], strict=True)}


def test_the_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    done = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_final_stage_runs_the_wheel_as_a_non_root_user() -> None:
    stage = final_stage()
    build = instructions()[: len(instructions()) - len(stage)]
    (install,) = [c for c in build if c.cmd == "RUN" and "pip install" in c.value[0]]
    assert "ama_stream-*.whl" in install.value[0] and "pip wheel" in install.value[0]
    env = env_of(build)
    assert env["PIP_NO_CACHE_DIR"] == "1"  # no pip cache even in the build stage
    # The final stage takes only the virtualenv from the build stage: no source, no wheel
    # files, no build tools (it installs no packages itself).
    (copied,) = [c for c in stage if c.cmd == "COPY"]
    assert copied.flags == ("--from=build",) and copied.value == ("/opt/ama-stream",) * 2
    runs = " ".join(c.value[0] for c in stage if c.cmd == "RUN")
    for word in ("apt-get", "apk", "pip", "gcc", "build-essential"):
        assert word not in runs
    (user,) = [c for c in stage if c.cmd == "USER"]
    uid = user.value[0].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric, so runAsNonRoot can verify it


def test_health_entry_point_and_configuration() -> None:
    health = image_instruction("HEALTHCHECK")
    assert health[0] == "CMD" and "/healthz" in health[-1] and "AMA_METRICS__PORT" in health[-1]
    assert image_instruction("ENTRYPOINT") == ["ama-stream"]
    assert image_instruction("CMD") == ["worker"]
    stage = final_stage()
    env = env_of(stage)
    settings = [k for k in env if k.startswith("AMA_")]
    assert settings == ["AMA_METRICS__PORT"] and env["AMA_METRICS__PORT"] == "9400"
    assert not [c for c in instructions() if c.cmd in ("VOLUME", "ADD")]
    secrets = ("PASSWORD", "SECRET", "TOKEN")
    assert not [k for k in env if any(word in k for word in secrets)]
    (exposed,) = [c for c in stage if c.cmd == "EXPOSE"]
    assert exposed.value == ("9400",)
