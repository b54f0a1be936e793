"""The Kubernetes manifests match what the services really serve.

Each container of the rendered kustomize base (deploy/render.py) runs as a local process with
exactly its command and the environment the manifests build for it: ``envFrom`` the ConfigMap,
``secretKeyRef`` values from the Secret template (its CHANGE-ME values filled in, as an operator
does), secret volumes written to a temporary directory standing in for their ``mountPath``.
Service names resolve through each Service's selector and targetPort to the Deployment's
containerPort, which is moved to a free local port consistently. The migration Job runs first;
then every probe path of every Deployment, and its Prometheus annotation, is called on its port.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from deploy.local import (
    AddressMap,
    Running,
    base_environment,
    drop_service_databases,
    http_get,
    run,
    start,
    stop,
    wait_until,
)
from deploy.render import K8S_BASE, render_kustomization
from shared.settings import DATABASE_SERVICES
from tests.conftest import Infra, free_port_block, private_settings

pytestmark = pytest.mark.integration

TESSERA = ("gateway", "issuer", "revocation", "keys")


@dataclass
class Pod:
    """One Deployment's container as it runs here: its spec, environment and local port."""

    deployment: dict[str, Any]
    env: dict[str, str]
    port: int
    ops_port: int
    running: Running | None = None

    def local_port(self, port: int | str) -> int:
        """Where a declared container port (name or number) listens here."""
        declared = self.container_port(port)
        return self.ops_port if declared == self.container_port("ops") else self.port

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.deployment["spec"]["template"]["spec"]["containers"]
        return dict(container)

    def container_port(self, port: int | str) -> int:
        """A probe's port (a name or a number) resolved against the container's ports."""
        for declared in self.container["ports"]:
            if port in (declared["name"], declared["containerPort"]):
                return int(declared["containerPort"])
        raise AssertionError(f"port {port!r} is not declared by {self.container['name']}")


def by_kind(rendered: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {r["metadata"]["name"]: r for r in rendered if r["kind"] == kind}


def filled_secret(tessera_env: dict[str, str], prefix: str) -> dict[str, str]:
    """secret.example.yaml with its placeholders replaced, as the operator is told to."""
    (template,) = [
        d for d in yaml.safe_load_all((K8S_BASE / "secret.example.yaml").read_text()) if d
    ]
    data = dict(template["stringData"])
    assert all("CHANGE-ME" in value for value in data.values())
    data["kek"] = tessera_env["TESSERA_KEK"]
    data["token-pepper"] = tessera_env["TESSERA_TOKEN_PEPPER"]
    # Each service's role and database, named under this run's prefix as the operator names
    # them under theirs; the admin and amqp URLs keep their form (AddressMap points them here).
    for service in DATABASE_SERVICES:
        name = f"{prefix}_{service}"
        data[f"{service}-database-url"] = (
            f"postgresql://{name}:{service}-password@postgres:5432/{name}"
        )
    return data


def service_addresses(
    rendered: list[dict[str, Any]], infra: Infra, local_ports: dict[str, int]
) -> AddressMap:
    """Each Service (name, port) -> the local port of the Deployment its selector picks."""
    addresses = AddressMap()
    db, amqp = urlsplit(infra.database_url), urlsplit(infra.amqp_url)
    addresses.add(
        ("postgres", 5432),
        (db.hostname or "", db.port or 5432),
        db.netloc.rsplit("@", 1)[0] if "@" in db.netloc else "",
    )
    addresses.add(
        ("rabbitmq", 5672),
        (amqp.hostname or "", amqp.port or 5672),
        amqp.netloc.rsplit("@", 1)[0] if "@" in amqp.netloc else "",
    )
    deployments = by_kind(rendered, "Deployment")
    for name, service in by_kind(rendered, "Service").items():
        selector = service["spec"]["selector"]
        picked = [
            d
            for d in deployments.values()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(picked) == 1, f"Service {name} selects {len(picked)} Deployments"
        (container,) = picked[0]["spec"]["template"]["spec"]["containers"]
        component = picked[0]["spec"]["template"]["metadata"]["labels"][
            "app.kubernetes.io/component"
        ]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            declared = [p for p in container["ports"] if target in (p["name"], p["containerPort"])]
            assert declared, f"Service {name} targets port {target!r}, which the pod lacks"
            addresses.add((name, int(port["port"])), ("127.0.0.1", local_ports[component]))
    return addresses


def container_env(
    pod_spec: dict[str, Any],
    config: dict[str, dict[str, Any]],
    secret: dict[str, str],
    secret_dir: Path,
    pki_dir: Path,
) -> dict[str, str]:
    """What the kubelet gives the container: envFrom, then env (later entries win)."""
    (container,) = pod_spec["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config[source["configMapRef"]["name"]]["data"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            if ref["key"] in secret:
                env[var["name"]] = secret[ref["key"]]
            else:  # the kubelet leaves an optional variable out when its key is absent
                assert ref.get("optional") is True, f"{var['name']}: Secret lacks {ref['key']}"
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = config[ref["name"]]["data"][ref["key"]]
    # Secret volumes: write the files, and point variables naming the mount path at them.
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "secret" not in volume:
            continue
        local = secret_dir / container["name"] / mount["name"]
        local.mkdir(parents=True)
        for item in volume["secret"]["items"]:
            if volume["secret"]["secretName"].startswith("tessera-tls-"):
                # `kubectl create secret generic tessera-tls-<svc> --from-file=...` of the
                # files `tessera pki init` made: here, the session's PKI.
                content = (pki_dir / item["key"]).read_text()
            else:
                content = secret[item["key"]]
            (local / item["path"]).write_text(content)
        for key, value in env.items():
            if value == mount["mountPath"] or value.startswith(mount["mountPath"] + "/"):
                env[key] = str(local) + value[len(mount["mountPath"]) :]
    return env


def translate(
    env: dict[str, str], addresses: AddressMap, ports: dict[str, int], isolation: dict[str, str]
) -> dict[str, str]:
    out = dict(env)
    for key, value in env.items():
        if key == "TESSERA_DATABASE_ADMIN_URL":
            out[key] = addresses.url(value, 5432)
        elif key.endswith("_DATABASE_URL"):  # a service's own role: keep its user
            out[key] = addresses.url(value, 5432, own_user=True)
        elif key == "TESSERA_AMQP_URL":
            out[key] = addresses.url(value, 5672)
        elif (
            key.endswith("_URL")
            and key.removeprefix("TESSERA_").removesuffix("_URL").lower() in TESSERA
        ):
            out[key] = addresses.url(value, 80)
    for name in TESSERA:
        if f"TESSERA_{name.upper()}_PORT" in out:
            out[f"TESSERA_{name.upper()}_PORT"] = str(ports[name])
        if f"TESSERA_{name.upper()}_OPS_PORT" in out:
            out[f"TESSERA_{name.upper()}_OPS_PORT"] = str(ports[f"{name}-ops"])
    return {**base_environment(), **out, **isolation}


@pytest.fixture(scope="module")
def pods(
    tessera_env: dict[str, str],
    infra: Infra,
    tmp_path_factory: pytest.TempPathFactory,
    pki_dir: Path,
) -> Iterator[dict[str, Pod]]:
    rendered = render_kustomization()
    config = by_kind(rendered, "ConfigMap")
    base = free_port_block(8)
    ports = {name: base + i for i, name in enumerate(TESSERA)}
    ports.update({f"{name}-ops": base + 4 + i for i, name in enumerate(TESSERA)})
    addresses = service_addresses(rendered, infra, ports)
    # Names of their own, derived from this session's (see test_deploy_compose.py).
    isolation = private_settings(tessera_env, "k8s")
    secret = filled_secret(tessera_env, isolation["TESSERA_DATABASE_PREFIX"])
    secret_dir = tmp_path_factory.mktemp("k8s-secrets")
    log_dir = tmp_path_factory.mktemp("k8s-logs")

    (job,) = by_kind(rendered, "Job").values()
    job_env = translate(
        container_env(job["spec"]["template"]["spec"], config, secret, secret_dir, pki_dir),
        addresses,
        ports,
        isolation,
    )
    result: dict[str, Pod] = {}
    for name in ("keys", "issuer", "revocation", "gateway"):
        deployment = by_kind(rendered, "Deployment")[f"tessera-{name}"]
        pod_spec = deployment["spec"]["template"]["spec"]
        env = container_env(pod_spec, config, secret, secret_dir, pki_dir)
        declared = {p["name"]: p["containerPort"] for p in pod_spec["containers"][0]["ports"]}
        # The ports the service listens on (TESSERA_<SVC>_PORT, _OPS_PORT) are the declared ones.
        assert int(env[f"TESSERA_{name.upper()}_PORT"]) == declared["http"], name
        assert int(env[f"TESSERA_{name.upper()}_OPS_PORT"]) == declared["ops"], name
        result[name] = Pod(
            deployment,
            translate(env, addresses, ports, isolation),
            ports[name],
            ports[f"{name}-ops"],
        )
    try:
        (job_container,) = job["spec"]["template"]["spec"]["containers"]
        migrate = run(job_container["command"] + job_container.get("args", []), job_env)
        assert migrate.returncode == 0, migrate.stderr
        # Backends first, then the gateway: what readiness gating converges to in a cluster.
        for name, pod in result.items():
            argv = pod.container["command"] + pod.container.get("args", [])
            pod.running = start(name, argv, pod.env, log_dir)
            ready = pod.container["readinessProbe"]["httpGet"]

            def check(pod: Pod = pod, ready: dict[str, Any] = ready) -> bool:
                assert pod.running is not None
                if pod.running.process.poll() is not None:
                    raise AssertionError(f"{pod.container['name']} exited:\n{pod.running.logs()}")
                url = f"http://127.0.0.1:{pod.local_port(ready['port'])}{ready['path']}"
                return http_get(url)[0] == 200

            try:
                wait_until(check, f"readiness of {name}", timeout=45)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}\n{pod.running.logs()[-3000:]}") from None
        yield result
    finally:
        stop([pod.running for pod in result.values() if pod.running])
        drop_service_databases(job_env)


def test_every_probe_path_answers_on_its_container_port(pods: dict[str, Pod]) -> None:
    checked = []
    for name, pod in pods.items():
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = pod.container[probe]["httpGet"]
            # The probe's port must be one the container declares (by name or number);
            # locally that containerPort listens on pod.port.
            status, _ = http_get(f"http://127.0.0.1:{pod.local_port(get['port'])}{get['path']}")
            assert status == 200, (name, probe, get["path"])
            checked.append((name, get["path"]))
    assert {path for _, path in checked} == {"/healthz", "/readyz"}
    assert {name for name, _ in checked} == set(TESSERA)


def test_prometheus_annotations_name_the_metrics_endpoint(pods: dict[str, Pod]) -> None:
    for name, pod in pods.items():
        annotations = pod.deployment["spec"]["template"]["metadata"]["annotations"]
        port = pod.local_port(int(annotations["prometheus.io/port"]))
        assert port == pod.ops_port, name
        status, body = http_get(f"http://127.0.0.1:{port}{annotations['prometheus.io/path']}")
        assert status == 200 and b"# TYPE" in body, name
        # The API port serves no metrics (the gateway's is public).
        assert http_get(f"http://127.0.0.1:{pods['gateway'].port}/metrics")[0] == 404


def test_an_unknown_probe_path_would_be_caught(pods: dict[str, Pod]) -> None:
    status, _ = http_get(f"http://127.0.0.1:{pods['keys'].ops_port}/health")
    assert status == 404


def test_the_gateway_reaches_every_backend_through_the_service_names(pods: dict[str, Pod]) -> None:
    import json
    import urllib.error
    import urllib.request

    gateway = f"http://127.0.0.1:{pods['gateway'].port}"
    # Ready: it read the revocation feed over mutual TLS at start-up.
    assert http_get(f"http://127.0.0.1:{pods['gateway'].ops_port}/readyz")[0] == 200
    # The keys service answers (Tapis 400 "unknown tenant", not a 503) for an unknown tenant ...
    status, body = http_get(f"{gateway}/v3/tenants/no-such-tenant/.well-known/jwks.json")
    assert status == 400 and b"unknown tenant" in body, body
    # ... and the issuer for an unknown credential (401, not 503).
    request = urllib.request.Request(
        f"{gateway}/api/2.0/token/list", headers={"Authorization": "Bearer dapi" + "0" * 32}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401, json.loads(refused.value.read())
    assert http_get(f"{gateway}/internal/status")[0] == 404


def test_the_configmap_keeps_the_jobmanager_dialect_to_the_pod_itself(
    pods: dict[str, Pod],
) -> None:
    """TESSERA_INTERNAL_NETWORKS from the ConfigMap reaches the gateway and names loopback
    only (issue 16: never the pod and service CIDRs): 127.0.0.1 is admitted, another address,
    even another loopback one (127.0.0.2, outside 127.0.0.1/32), is refused."""
    import http.client
    import ipaddress
    import json

    networks = pods["gateway"].env["TESSERA_INTERNAL_NETWORKS"].split(",")
    assert all(ipaddress.ip_network(n.strip()).is_loopback for n in networks), networks

    def status_from(source: str) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", pods["gateway"].port, timeout=5, source_address=(source, 0)
        )
        try:
            body = json.dumps({"identity": "svc"})
            conn.request("POST", "/v1/api_access_token", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, json.loads(response.read() or b"{}")
        finally:
            conn.close()

    status, body = status_from("127.0.0.2")
    assert status == 403 and "internal" in body["detail"], (status, body)
    assert status_from("127.0.0.1")[0] != 403
