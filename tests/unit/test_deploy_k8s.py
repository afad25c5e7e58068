"""The Kubernetes base: rendered like kustomize, validated against Kubernetes and KEDA schemas.

No cluster is needed: the kustomize tree is rendered by a small Python pass (the subset of
kustomize this base uses; anything else fails the render), every built-in kind is checked
with kubernetes-validate's bundled schemas in strict mode (unknown fields are errors), and
every KEDA ScaledObject with cloudcoil's models generated from KEDA's CRDs (round-tripped,
so an unknown field is an error there too). Then the contract with the code: env names in
the settings model, consumer groups as the apps name them, thresholds from backpressure.
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda.v1alpha1 import ScaledObject

from pipelines.backpressure import EDGES
from pipelines.catalog import APP_IDS
from pipelines.cli.config import env_names
from pipelines.settings import Settings
from pipelines.stages.windows import SOURCES

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "k8s"
K8S_VERSIONS = ("1.29.0", kubernetes_validate.latest_version() + ".0")
SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "labels", "images", "resources"}
CLUSTER_SCOPED = {"Namespace"}
#: The topics whose lag each stage scales on (the same edges backpressure watches).
SCALE_TOPICS = {
    "orders": tuple(EDGES["intake"].topics),
    "notifications": tuple(EDGES["orders"].topics),
    "analytics": tuple(SOURCES),
}
MIN_REPLICAS = {"orders": 2, "notifications": 2, "analytics": 1}
WORKER_USER = 10001


def render(base: Path = BASE) -> list[dict[str, Any]]:
    """The manifests `kustomize build base` would print, for the features this base uses."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KUSTOMIZE_KEYS
    assert not unknown, f"the test renderer does not know kustomize fields {unknown}"
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((base / resource).read_text()) if d]
    for doc in docs:
        if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
            doc["metadata"]["namespace"] = kustomization["namespace"]
        for label in kustomization.get("labels", []):
            assert not label.get("includeSelectors")
            assert not label.get("includeTemplates")
            doc["metadata"].setdefault("labels", {}).update(label["pairs"])
        for container in _containers(doc):
            for image in kustomization.get("images", []):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image['newName']}:{image['newTag']}"
    return docs


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in ("Deployment", "Job"):
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    return None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(doc)
    return pod["containers"] if pod else []


def _by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def check_builtin(doc: dict[str, Any]) -> None:
    """Strict schema validation of a built-in kind for every Kubernetes version we support."""
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def check_scaled_object(doc: dict[str, Any]) -> None:
    """Validate against KEDA's CRD models; a field the models drop is an unknown field."""
    model = ScaledObject.model_validate(doc)
    back = model.model_dump(by_alias=True, exclude_unset=True, mode="json")
    assert back == doc, f"{doc['metadata']['name']}: fields unknown to KEDA's ScaledObject"


def check(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        assert doc["kind"] == "ScaledObject"
        check_scaled_object(doc)
    else:
        check_builtin(doc)


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render()


@pytest.fixture(scope="module")
def settings_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    """What every pod gets through envFrom: the ConfigMap and the Secret."""
    config = _by_kind(docs, "ConfigMap")["sluice-settings"]["data"]
    secret = _by_kind(docs, "Secret")["sluice-secrets"].get("stringData") or {}
    return {**config, **secret}


@pytest.fixture
def pod_settings(monkeypatch: pytest.MonkeyPatch, settings_env: dict[str, str]) -> Settings:
    """Settings as a worker pod builds them from its environment."""
    import os

    for name in list(os.environ):
        if name.upper().startswith(("SLUICE_", "KAFKA_", "SCHEMA_REGISTRY")):
            monkeypatch.delenv(name)
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SLUICE_GROUP_INSTANCE_ID", "sluice-orders-5d9c7-abcde")
    return Settings()


def test_render_covers_every_kind(docs: list[dict[str, Any]]) -> None:
    kinds = sorted({d["kind"] for d in docs})
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Job",
        "Namespace",
        "PodDisruptionBudget",
        "ScaledObject",
        "Secret",
    ]
    assert all(d["metadata"].get("namespace") == "sluice" for d in docs if d["kind"] != "Namespace")


@pytest.mark.parametrize("doc", render(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_manifest_validates(doc: dict[str, Any]) -> None:
    check(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("spec", "template", "spec", "terminationGracePeriodSeconds"), "sixty"),
        (("spec", "template", "spec", "containers", 0, "livenessProbe", "exec", "cmd"), ["x"]),
        (("spec", "strategy", "rollingUpdate", "maxSurges"), 1),
    ],
)
def test_the_kubernetes_check_rejects_broken_deployments(
    docs: list[dict[str, Any]], path: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(_by_kind(docs, "Deployment")["sluice-orders"])
    _set(doc, path, value)
    with pytest.raises(kubernetes_validate.ValidationError):
        check(doc)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("spec", "maxReplicaCounts"), 6), (("spec", "minReplicaCount"), "two")],
)
def test_the_keda_check_rejects_broken_scaled_objects(
    docs: list[dict[str, Any]], path: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(_by_kind(docs, "ScaledObject")["sluice-orders"])
    _set(doc, path, value)
    with pytest.raises((AssertionError, ValueError)):
        check(doc)


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def test_the_renderer_refuses_kustomize_features_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches: []\n")
    with pytest.raises(AssertionError, match="patches"):
        render(tmp_path)


def test_every_env_name_in_the_manifests_is_a_setting() -> None:
    known = env_names()
    text = "\n".join(p.read_text() for p in sorted(BASE.glob("*.yaml")))
    named = set(re.findall(r"\b(?:SLUICE_[A-Z0-9_]+|KAFKA_[A-Z0-9_]+|SCHEMA_REGISTRY_URL)\b", text))
    assert "SLUICE_GROUP_INSTANCE_ID" in named
    assert sorted(named - known) == []


def test_every_container_env_is_a_setting(docs: list[dict[str, Any]]) -> None:
    known = env_names()
    for doc in docs:
        for container in _containers(doc):
            names = {e["name"] for e in container.get("env", [])}
            assert names <= known, (doc["metadata"]["name"], names - known)
            refs = {r.get("configMapRef", r.get("secretRef"))["name"] for r in container["envFrom"]}
            assert refs == {"sluice-settings", "sluice-secrets"}
    assert set(_by_kind(docs, "ConfigMap")["sluice-settings"]["data"]) <= known


def test_the_config_map_builds_valid_settings(pod_settings: Settings) -> None:
    assert pod_settings.group_instance_id == "sluice-orders-5d9c7-abcde"
    assert str(pod_settings.data_dir) == "/var/lib/sluice"
    assert pod_settings.partitions == 6


def _args(container: dict[str, Any]) -> dict[str, str]:
    args = container["args"]
    return {args[i]: args[i + 1] for i in range(2, len(args) - 1, 2)}


def test_one_deployment_per_stage_with_health_probes(docs: list[dict[str, Any]]) -> None:
    deployments = _by_kind(docs, "Deployment")
    assert set(deployments) == {f"sluice-{stage}" for stage in APP_IDS}
    for stage in APP_IDS:
        deployment = deployments[f"sluice-{stage}"]
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        (container,) = _containers(deployment)
        assert container["image"] == "sluice:dev"
        assert container["args"][:2] == ["worker", stage]
        port = _args(container)["--web-port"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            command = shlex.join(container[probe]["exec"]["command"])
            assert f"http://127.0.0.1:{port}/health" in command, (stage, probe)
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])


def test_graceful_stop_fits_the_grace_period(docs: list[dict[str, Any]]) -> None:
    settings = Settings()
    for deployment in _by_kind(docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        stop_timeout = float(_args(pod["containers"][0])["--stop-timeout"])
        # Faust's shutdown commits; the supervisor's bound must end before the kubelet's kill.
        assert settings.commit_interval_s * 10 <= stop_timeout
        assert stop_timeout + 10 <= pod["terminationGracePeriodSeconds"]


def test_pods_run_as_the_image_user_without_privileges(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        pod = _pod_spec(doc)
        if pod is None:
            continue
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == WORKER_USER
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False
            assert security["readOnlyRootFilesystem"] is True


def test_static_membership_comes_from_the_pod_name(docs: list[dict[str, Any]]) -> None:
    for deployment in _by_kind(docs, "Deployment").values():
        (container,) = _containers(deployment)
        env = {e["name"]: e for e in container["env"]}
        field = env["SLUICE_GROUP_INSTANCE_ID"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert field == "metadata.name"


def test_a_disruption_budget_per_stage(docs: list[dict[str, Any]]) -> None:
    budgets = _by_kind(docs, "PodDisruptionBudget")
    deployments = _by_kind(docs, "Deployment")
    assert set(budgets) == set(deployments)
    for name, budget in budgets.items():
        selector = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= selector.items()
        assert budget["spec"]["maxUnavailable"] == 1  # never blocks a drain, even at 1 replica


def test_scaled_objects_follow_groups_partitions_and_backpressure(
    docs: list[dict[str, Any]], pod_settings: Settings, settings_env: dict[str, str]
) -> None:
    scaled = _by_kind(docs, "ScaledObject")
    assert set(scaled) == set(_by_kind(docs, "Deployment"))
    for stage in APP_IDS:
        spec = scaled[f"sluice-{stage}"]["spec"]
        assert spec["scaleTargetRef"]["name"] == f"sluice-{stage}"
        assert spec["minReplicaCount"] == MIN_REPLICAS[stage]
        assert spec["maxReplicaCount"] == pod_settings.partitions
        triggers = spec["triggers"]
        topics = tuple(t["metadata"]["topic"] for t in triggers)
        assert topics == tuple(pod_settings.topic(t) for t in SCALE_TOPICS[stage])
        threshold = pod_settings.backpressure.high // (spec["maxReplicaCount"] * len(triggers))
        for trigger in triggers:
            meta = trigger["metadata"]
            assert trigger["type"] == "kafka"
            assert meta["consumerGroup"] == pod_settings.group(APP_IDS[stage])
            assert meta["bootstrapServers"] == settings_env["KAFKA_BOOTSTRAP_SERVERS"]
            assert int(meta["lagThreshold"]) == threshold
            assert meta["offsetResetPolicy"] == "earliest"  # as the Faust apps reset


def test_the_topics_job_creates_the_catalog(docs: list[dict[str, Any]]) -> None:
    (job,) = _by_kind(docs, "Job").values()
    (container,) = _containers(job)
    assert container["args"] == ["topics", "create"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
