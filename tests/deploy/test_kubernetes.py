"""deploy/kubernetes/: valid against the Kubernetes API schemas (offline, with the schemas
kubernetes-validate ships) and consistent with the code: probe paths are routes of the
app, env names are settings, commands are `app` commands, and the grace periods cover
the shutdown the settings describe."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import ValidationError

from app.core.config import JWT_SECRET_PLACEHOLDER, Settings
from app.main import create_app
from tests.conftest import build_test_settings
from tests.deploy.settings_names import (
    parse_cli,
    setting_default,
    setting_env_names,
    unknown_env_names,
)

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS_DIR = ROOT / "deploy" / "kubernetes"
KUSTOMIZATION = MANIFESTS_DIR / "kustomization.yaml"
# The oldest release the manifests are written for (the preStop `sleep` action is on by
# default from 1.30) and the newest kubernetes-validate has schemas for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
APP_IMAGE = "ghcr.io/example/app"
# Seconds between the end of the shutdown the settings describe and SIGKILL.
SHUTDOWN_MARGIN_SECONDS = 5

Doc = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(path for path in MANIFESTS_DIR.glob("*.yaml") if path != KUSTOMIZATION)


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


DOCS = [(path.name, doc) for path in _manifest_files() for doc in _load(path)]


def _find(kind: str, name: str) -> Doc:
    found = [doc for _, doc in DOCS if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _workloads() -> Iterator[Doc]:
    for _, doc in DOCS:
        if doc["kind"] in {"Deployment", "Job"}:
            yield doc


def _pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def _is_app(container: Doc) -> bool:
    return str(container["image"]).split(":")[0] == APP_IMAGE


def _app_containers() -> Iterator[tuple[Doc, Doc]]:
    for workload in _workloads():
        for container in _pod_spec(workload)["containers"]:
            if _is_app(container):
                yield workload, container


def _container(deployment: str) -> Doc:
    (container,) = _pod_spec(_find("Deployment", deployment))["containers"]
    found: Doc = container
    return found


def _data(doc: Doc) -> dict[str, str]:
    """A ConfigMap's or Secret's entries (the Secrets here are written as stringData)."""
    assert "data" not in doc or doc["kind"] == "ConfigMap", "write Secrets as stringData"
    entries: dict[str, str] = doc.get("stringData") or doc.get("data") or {}
    return entries


def _environment(container: Doc) -> dict[str, str]:
    """The variables the container starts with: envFrom in order, then env (which wins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= _data(_find("ConfigMap", source["configMapRef"]["name"]))
        else:
            env |= _data(_find("Secret", source["secretRef"]["name"]))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = _data(_find("Secret", ref["name"]))[ref["key"]]
    return env


def _setting(container: Doc, name: str) -> float:
    """A numeric setting as this container sees it: its environment, else the default."""
    value = _environment(container).get(name, setting_default(name))
    assert isinstance(value, str | int | float), name
    return float(value)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load(KUSTOMIZATION.read_text())
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed)), "a resource is listed twice"
    assert sorted(listed) == [path.name for path in _manifest_files()]


def test_app_image_is_overridable_by_kustomize() -> None:
    images = yaml.safe_load(KUSTOMIZATION.read_text())["images"]
    assert [image["name"] for image in images] == [APP_IMAGE]
    app_images = {container["image"] for _, container in _app_containers()}
    assert app_images == {f"{APP_IMAGE}:latest"}
    workloads = {workload["metadata"]["name"] for workload, _ in _app_containers()}
    assert workloads == {"app-api", "app-worker", "app-migrate"}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    ("filename", "doc"),
    DOCS,
    ids=[f"{name}:{d['kind']}/{d['metadata']['name']}" for name, d in DOCS],
)
def test_manifest_is_valid_kubernetes(filename: str, doc: Doc, version: str) -> None:
    # Strict: an unknown or misspelt field fails, not only a wrong type.
    validated = kubernetes_validate.validate(doc, version, strict=True)
    assert validated == version.rsplit(".", 1)[0]


def test_schemas_are_offline_and_strict() -> None:
    """The validation above means something: the schemas ship with the package, and a
    misspelt field is refused."""
    api = _find("Deployment", "app-api")
    broken = yaml.safe_load(yaml.safe_dump(api))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpget": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def _get_paths() -> set[str]:
    """The app's GET routes, as its OpenAPI document lists them."""
    paths: dict[str, dict[str, object]] = create_app(build_test_settings()).openapi()["paths"]
    return {path for path, operations in paths.items() if "get" in operations}


def test_api_probes_are_health_routes_on_the_served_port() -> None:
    container = _container("app-api")
    assert parse_cli(container["command"]).command == "serve"
    env = _environment(container)
    assert env["HOST"] == "0.0.0.0"  # noqa: S104 - inside the pod, as the Dockerfile has it
    assert env["PYTHONUNBUFFERED"] == "1"
    (port,) = container["ports"]
    assert port["containerPort"] == int(env["PORT"])

    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe")}
    probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
    assert probes["livenessProbe"]["path"] == "/health/live"
    assert probes["startupProbe"]["path"] == "/health/live"
    assert probes["readinessProbe"]["path"] == "/health/ready"
    routes = _get_paths()
    for kind, probe in probes.items():
        assert probe["path"] in routes, kind
        assert probe["port"] in (port["name"], port["containerPort"]), kind

    service = _find("Service", "app-api")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])
    pod_labels = _find("Deployment", "app-api")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    worker_labels = _find("Deployment", "app-worker")["spec"]["template"]["metadata"]["labels"]
    assert not service["spec"]["selector"].items() <= worker_labels.items()


def test_every_command_is_an_app_command() -> None:
    expected = {"app-api": "serve", "app-worker": "worker", "app-migrate": "migrate"}
    for workload, container in _app_containers():
        args = parse_cli(container["command"])
        assert args.command == expected[workload["metadata"]["name"]]
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if "exec" in container.get(kind, {}):
                parse_cli(container[kind]["exec"]["command"])
    worker = _container("app-worker")
    for kind in ("startupProbe", "livenessProbe"):
        probe = parse_cli(worker[kind]["exec"]["command"])
        assert (probe.command, probe.check) == ("worker", True), kind


def test_env_names_are_settings() -> None:
    assert {"DATABASE_PGBOUNCER", "SHUTDOWN_DRAIN_SECONDS"} <= setting_env_names()
    consumed: set[tuple[str, str]] = set()
    for _, container in _app_containers():
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source["secretRef"]
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            consumed.add((kind, ref["name"]))
            assert unknown_env_names(_data(_find(kind, ref["name"]))) == [], ref["name"]
        assert unknown_env_names(entry["name"] for entry in container.get("env", [])) == []
        for entry in container.get("env", []):
            if "valueFrom" in entry:
                ref = entry["valueFrom"]["secretKeyRef"]
                consumed.add(("Secret", ref["name"]))
                # The key is named after the variable it fills.
                assert ref["key"] == entry["name"]
    # The rest (PgBouncer's login) is read by another image, under its own names.
    others = {
        ("Secret", source["secretRef"]["name"])
        for workload in _workloads()
        for container in _pod_spec(workload)["containers"]
        if not _is_app(container)
        for source in container.get("envFrom", [])
    }
    assert not consumed & others
    for _, doc in DOCS:
        if doc["kind"] in {"ConfigMap", "Secret"}:
            assert (doc["kind"], doc["metadata"]["name"]) in consumed | others


def _apply_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file
    for name in setting_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("workload", ["app-api", "app-worker", "app-migrate"])
def test_configuration_is_valid_once_the_secret_is_filled_in(
    workload: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (container,) = [c for w, c in _app_containers() if w["metadata"]["name"] == workload]
    env = _environment(container) | {"JWT_SECRET": "a-real-secret-" + "x" * 40}
    _apply_env(monkeypatch, tmp_path, env)
    settings = Settings()
    assert settings.is_production
    assert str(settings.storage_dir) == "/var/lib/app/storage"
    assert settings.database.pgbouncer is (workload != "app-migrate")


def test_example_secret_is_refused_in_production(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Applied as is, the example Secret stops the pods rather than run with a known key."""
    secret = _data(_find("Secret", "app-secrets"))
    assert secret["JWT_SECRET"] == JWT_SECRET_PLACEHOLDER
    for doc in (_find("Secret", name) for name in ("app-secrets", "app-database-direct")):
        for url in (v for k, v in _data(doc).items() if k.endswith("_URL")):
            assert ":CHANGE-ME@" in url, url
    assert _data(_find("Secret", "pgbouncer-secrets"))["DB_PASSWORD"] == "CHANGE-ME"
    _apply_env(monkeypatch, tmp_path, _environment(_container("app-api")))
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings()


def _pre_stop_seconds(container: Doc) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if pre_stop is None:
        return 0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    script = " ".join(pre_stop["exec"]["command"])
    return sum(float(seconds) for seconds in re.findall(r"\bsleep (\d+(?:\.\d+)?)", script))


def test_api_grace_period_covers_the_drain() -> None:
    """preStop, then SHUTDOWN_DRAIN_SECONDS of serving with readiness 503, the realtime
    goodbyes, then SHUTDOWN_GRACE_SECONDS for in-flight requests, then a margin."""
    container = _container("app-api")
    needed = (
        _pre_stop_seconds(container)
        + _setting(container, "SHUTDOWN_DRAIN_SECONDS")
        + _setting(container, "REALTIME_DRAIN_TIMEOUT_SECONDS")
        + _setting(container, "SHUTDOWN_GRACE_SECONDS")
        + SHUTDOWN_MARGIN_SECONDS
    )
    assert _pre_stop_seconds(container) > 0
    assert _setting(container, "SHUTDOWN_DRAIN_SECONDS") > 0
    grace = _pod_spec(_find("Deployment", "app-api"))["terminationGracePeriodSeconds"]
    assert grace >= needed


def test_worker_grace_period_covers_running_jobs() -> None:
    container = _container("app-worker")
    jobs = _setting(container, "WORKER_SHUTDOWN_GRACE_SECONDS")
    grace = _pod_spec(_find("Deployment", "app-worker"))["terminationGracePeriodSeconds"]
    assert grace >= _pre_stop_seconds(container) + jobs + SHUTDOWN_MARGIN_SECONDS


def _dockerfile_user() -> tuple[int, int]:
    match = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert match, "the Dockerfile's USER is numeric"
    return int(match[1]), int(match[2])


def test_every_container_is_locked_down() -> None:
    uid, gid = _dockerfile_user()
    for workload in _workloads():
        pod = _pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), where
            assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), where
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where  # noqa: S108 - a mount path
            if _is_app(container):
                pod_security = pod["securityContext"]
                user = (pod_security["runAsUser"], pod_security["runAsGroup"])
                assert user == (uid, gid), where


def test_api_and_worker_share_a_read_write_many_storage_volume() -> None:
    claim = _find("PersistentVolumeClaim", "app-storage")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("app-api", "app-worker"):
        container = _container(name)
        storage = _environment(container)["STORAGE_DIR"]
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {v["name"]: v for v in _pod_spec(_find("Deployment", name))["volumes"]}
        assert volumes[mounts[storage]]["persistentVolumeClaim"]["claimName"] == "app-storage"


def test_pgbouncer_runs_in_transaction_mode_and_the_app_uses_it() -> None:
    pgbouncer = _container("pgbouncer")
    env = {entry["name"]: entry.get("value") for entry in pgbouncer["env"]}
    assert env["POOL_MODE"] == "transaction"
    assert _data(_find("ConfigMap", "app-config"))["DATABASE_PGBOUNCER"] == "true"
    service = _find("Service", "pgbouncer")
    (port,) = service["spec"]["ports"]
    url = _data(_find("Secret", "app-secrets"))["DATABASE_URL"]
    assert f"@pgbouncer:{port['port']}/{env['DB_NAME']}" in url
    # The migration Job goes straight to PostgreSQL, out of pooler mode.
    (migrate,) = _pod_spec(_find("Job", "app-migrate"))["containers"]
    job_env = _environment(migrate)
    assert "@pgbouncer:" not in job_env["DATABASE_URL"]
    assert job_env["DATABASE_PGBOUNCER"] == "false"
    # Client connections one PgBouncer pod may have to take: every app process's pool.
    api = _environment(_container("app-api"))
    per_process = int(api["DATABASE_POOL_SIZE"]) + int(api["DATABASE_MAX_OVERFLOW"])
    pods = _find("HorizontalPodAutoscaler", "app-api")["spec"]["maxReplicas"]
    workers = _find("Deployment", "app-worker")["spec"]["replicas"]
    clients = (pods * int(api["WEB_CONCURRENCY"]) + workers) * per_process
    assert clients <= int(env["MAX_CLIENT_CONN"] or 0)


def test_autoscaler_and_disruption_budgets_target_real_pods() -> None:
    hpa = _find("HorizontalPodAutoscaler", "app-api")
    target = hpa["spec"]["scaleTargetRef"]
    api = _find(target["kind"], target["name"])
    assert "replicas" not in api["spec"], "the HPA owns the API's replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    for _, doc in DOCS:
        if doc["kind"] != "PodDisruptionBudget":
            continue
        selector = doc["spec"]["selector"]["matchLabels"]
        matched = [
            workload
            for workload in _workloads()
            if selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert [w["kind"] for w in matched] == ["Deployment"], doc["metadata"]["name"]


def test_migration_job_runs_once_and_documents_the_rollout() -> None:
    job = _find("Job", "app-migrate")
    assert _pod_spec(job)["restartPolicy"] == "Never"
    (container,) = _pod_spec(job)["containers"]
    assert parse_cli(container["command"]).command == "migrate"
    wait = "kubectl wait --for=condition=complete job/app-migrate"
    assert wait in (MANIFESTS_DIR / "migrate-job.yaml").read_text()
    assert wait in (ROOT / "docs" / "kubernetes.md").read_text()
