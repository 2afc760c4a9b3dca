"""The Kubernetes manifests (deploy/k8s), rendered by kustomize for each overlay: every
resource valid against the Kubernetes schemas, the KEDA ScaledObject valid against KEDA's own
CRD schema, and the properties the docs promise (probes, drain time, partitions, GPUs)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import OVERLAYS, pod_spec, render

from schemas.settings import load_settings
from streamer.worker.config import WorkerOptions

# The oldest Kubernetes still served by the major clouds when this was written, and the newest
# kubernetes-validate ships schemas for.
KUBERNETES = ("1.30.0", "1.37.0")
VENDOR = Path(__file__).with_name("vendor")
# The trigger metadata KEDA's Kafka scaler parses at v2.20.2 (pkg/scalers/kafka_scaler.go, the
# `keda:"name=..."` tags of kafkaMetadata, trigger-metadata ones), each also as <name>FromEnv
# where it may be resolved from the container's environment.
KAFKA_METADATA = {
    "bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
    "topic", "topicFromEnv", "partitionLimitation", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag",
    "scaleToZeroOnInvalidOffset", "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions", "version", "tls", "unsafeSsl", "sasl",
    "saslTokenProvider", "awsRegion",
}  # fmt: skip


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def by_kind(resources: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in resources if r["kind"] == kind]


def one(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [r for r in by_kind(resources, kind) if r["metadata"]["name"] == name]
    return found


def strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused wherever it lists the fields (a typo in a
    field name would otherwise pass, as the API server silently prunes it)."""
    schema = copy.deepcopy(schema)
    if isinstance(schema, dict):
        for key, value in list(schema.items()):
            schema[key] = strict(value)
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def test_every_resource_is_valid_for_kubernetes(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, resources = rendered
    assert {r["kind"] for r in resources} == {
        "ConfigMap", "PersistentVolumeClaim", "Job", "Deployment", "PodDisruptionBudget",
        "ScaledObject", "CronJob",
    }  # fmt: skip
    for resource in resources:
        assert resource["metadata"]["namespace"] == "ama-stream"
        if resource["kind"] == "ScaledObject":
            continue  # KEDA's CRD, below
        for version in KUBERNETES:
            kubernetes_validate.validate(resource, version, strict=True)


def test_the_scaled_object_is_valid_for_kedas_crd(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, resources = rendered
    crd = yaml.safe_load((VENDOR / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    (scaled,) = by_kind(resources, "ScaledObject")
    assert scaled["apiVersion"] == f"{crd['spec']['group']}/v1alpha1"
    jsonschema.validate(scaled, strict(version["schema"]["openAPIV3Schema"]))
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka" and set(trigger["metadata"]) <= KAFKA_METADATA


def test_the_autoscaler_targets_the_workers_and_never_exceeds_the_partitions(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, resources = rendered
    (scaled,) = by_kind(resources, "ScaledObject")
    worker = one(resources, "Deployment", "ama-stream-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert "replicas" not in worker["spec"], "KEDA's HPA owns the replica count"
    args = one(resources, "Job", "ama-stream-topics")["spec"]["template"]["spec"]["containers"][0]
    partitions = int(args["args"][args["args"].index("--partitions") + 1])
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= partitions
    # The trigger reads broker, group and topic from the workers' own settings.
    settings = one(resources, "ConfigMap", "ama-stream-settings")["data"]
    metadata = scaled["spec"]["triggers"][0]["metadata"]
    for name in ("bootstrapServersFromEnv", "consumerGroupFromEnv", "topicFromEnv"):
        assert metadata[name] in settings
    assert metadata["offsetResetPolicy"] == "earliest"  # as the worker's auto.offset.reset
    assert metadata["allowIdleConsumers"] == "false"


def test_the_worker_pods_keep_the_promises_of_the_docs(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    overlay, resources = rendered
    worker = one(resources, "Deployment", "ama-stream-worker")
    spec = pod_spec(worker)
    assert spec is not None
    (container,) = spec["containers"]
    assert container["args"] == ["worker"]
    port = {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"]
    settings = one(resources, "ConfigMap", "ama-stream-settings")["data"]
    assert int(settings["AMA_METRICS__PORT"]) == port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    budget = WorkerOptions()
    assert spec["terminationGracePeriodSeconds"] > budget.drain_budget_s + budget.revoke_budget_s
    assert (
        container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"]
    )
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    labels = worker["spec"]["template"]["metadata"]["labels"]
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    pdb = one(resources, "PodDisruptionBudget", "ama-stream-worker")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    for resource in resources:
        pod = pod_spec(resource)
        for c in pod["containers"] if pod else []:
            assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"]
            assert c["securityContext"]["readOnlyRootFilesystem"]
            secrets = {e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])}
            assert secrets <= {"ama-stream-credentials"}
            assert [e["configMapRef"]["name"] for e in c["envFrom"]] == ["ama-stream-settings"]
    gpu = container["resources"]["limits"].get("nvidia.com/gpu")
    if overlay == "gpu":
        assert gpu == 1 and spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert settings["AMA_MODEL__DEVICE"] == "cuda"
    else:
        assert gpu is None and "nodeSelector" not in spec
        assert settings["AMA_MODEL__DEVICE"] == "cpu"


def test_the_config_map_is_valid_settings(
    rendered: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every AMA_* variable the pods get names a real setting with a valid value (a typo
    would make every job refuse to start)."""
    _, resources = rendered
    for name in [n for n in os.environ if n.startswith("AMA_")]:
        monkeypatch.delenv(name)
    data = one(resources, "ConfigMap", "ama-stream-settings")["data"]
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.redis.cluster and settings.redis.wait_replicas == 1
    assert str(settings.retrain.store) == "/models"
    assert settings.kafka.input_topic == data["AMA_KAFKA__INPUT_TOPIC"]
