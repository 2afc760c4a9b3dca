"""What the deployment files say, for the tests that check them: the rendered Kubernetes
overlays (kustomize) and the container image's entry point (the Dockerfile, parsed by BuildKit's
own parser through the ``dockerfile`` package)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import dockerfile
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def kustomize() -> list[str]:
    """The kustomize command: a kustomize binary, else kubectl's built-in one (deploy/dev.sh
    installs kustomize when neither is there)."""
    if binary := shutil.which("kustomize"):
        return [binary, "build"]
    if kubectl := shutil.which("kubectl"):
        return [kubectl, "kustomize"]
    raise AssertionError("neither kustomize nor kubectl is on PATH (deploy/dev.sh installs it)")


def render(overlay: str) -> list[dict[str, Any]]:
    """Every resource ``deploy/k8s/overlays/<overlay>`` renders to."""
    done = subprocess.run(
        [*kustomize(), str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def pod_spec(resource: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload (Deployment, Job, CronJob), else None."""
    spec = resource.get("spec", {})
    if resource["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    template = spec.get("template")
    return template["spec"] if template else None


def container_argvs() -> dict[str, list[str]]:
    """``overlay/kind/name/container`` -> the argv each container runs: the image's entry point
    (from the Dockerfile, as the manifests set no ``command``) followed by its ``args``."""
    entrypoint = image_instruction("ENTRYPOINT")
    out = {}
    for overlay in OVERLAYS:
        for resource in render(overlay):
            spec = pod_spec(resource)
            for container in spec["containers"] if spec else []:
                assert "command" not in container, "the manifests rely on the image's entry point"
                where = f"{overlay}/{resource['kind']}/{resource['metadata']['name']}"
                out[f"{where}/{container['name']}"] = [*entrypoint, *container["args"]]
    return out


def instructions() -> list[Any]:
    """The Dockerfile's instructions (BuildKit's parser)."""
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def final_stage() -> list[Any]:
    """The instructions of the last stage: what the image that runs is made of."""
    found = instructions()
    last = max(i for i, c in enumerate(found) if c.cmd == "FROM")
    return found[last:]


def image_instruction(name: str) -> list[str]:
    """The exec-form value of the final stage's last ``name`` (ENTRYPOINT, CMD, HEALTHCHECK)."""
    (found, *_) = [c for c in reversed(final_stage()) if c.cmd == name]
    assert found.json, f"{name} must be in exec form (JSON array)"
    return list(found.value)
