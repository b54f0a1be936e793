"""Read the deployment files the way their tools do, so tests can check them without the tools.

No Docker engine, kubectl or kustomize binary is needed:

- :func:`interpolate` applies Compose's ``${VAR}`` / ``${VAR:-default}`` / ``${VAR:?error}`` /
  ``$$`` rules to a loaded ``docker-compose.yml``, with the values ``docker compose`` would take
  from ``.env``;
- :func:`read_env_file` reads ``.env``-style files (``KEY=value`` lines, ``#`` comments);
- :func:`render_kustomization` renders the kustomize base under ``deploy/k8s``. The base uses
  only ``resources``, ``namespace`` and ``images``; any other kustomize field makes it raise,
  so the rendering here can never silently differ from ``kubectl kustomize``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
K8S_BASE = ROOT / "deploy" / "k8s"
COMPOSE_SCHEMA = ROOT / "deploy" / "schemas" / "compose-spec.json"
DOCKERFILE = ROOT / "Dockerfile"

_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "namespace", "resources", "images"}
# Kinds kustomize leaves without a namespace (the cluster-scoped ones a base might hold).
_CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
}
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A required variable (``${VAR:?message}``) is unset, as ``docker compose`` would report."""


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a Compose ``.env`` file; blank lines and ``#`` comments skipped."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path}:{number}: not a KEY=value line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset_or_empty = not value
        if op == ":-":
            return arg if unset_or_empty else str(value)
        if op == "-":
            return arg if value is None else value
        if op == ":?" and unset_or_empty:
            raise InterpolationError(f"{name}: {arg or 'required variable is missing a value'}")
        if op == "?" and value is None:
            raise InterpolationError(f"{name}: {arg or 'required variable is not set'}")
        return value or ""

    return _VARIABLE.sub(replace, text)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose interpolation of every string in a loaded Compose document (keys untouched)."""
    if isinstance(value, str):
        return _substitute(value, env)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


def variables_used(value: Any) -> Iterator[tuple[str, str | None]]:
    """Every ``(name, operator)`` referenced by ``${...}``/``$NAME`` in a Compose document."""
    if isinstance(value, str):
        for match in _VARIABLE.finditer(value):
            name = match.group("braced") or match.group("bare")
            if name:
                yield name, match.group("op")
    elif isinstance(value, list):
        for item in value:
            yield from variables_used(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from variables_used(item)


def load_compose(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``docker-compose.yml`` with YAML anchors merged; interpolated when ``env`` is given."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate(document, env) if env is not None else document


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A Compose service's ``environment`` (map or ``KEY=value`` list) as strings."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {key: "" if value is None else str(value) for key, value in raw.items()}


def _load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _split_image(image: str) -> tuple[str, str]:
    """``registry/name:tag@digest`` -> (``registry/name``, ``tag``); a port is not a tag."""
    reference = image.split("@", 1)[0]
    head, _, last = reference.rpartition("/")
    if ":" in last:
        last, _, tag = last.partition(":")
    else:
        tag = ""
    return (f"{head}/{last}" if head else last), tag


def _retag(image: str, rules: list[Mapping[str, str]]) -> str:
    """Apply kustomize ``images`` rules (name -> newName / newTag / digest) to one image."""
    name, tag = _split_image(image)
    for rule in rules:
        if rule["name"] != name:
            continue
        new_name = rule.get("newName", name)
        if "digest" in rule:
            return f"{new_name}@{rule['digest']}"
        new_tag = str(rule.get("newTag", tag))
        return f"{new_name}:{new_tag}" if new_tag else new_name
    return image


def _pod_spec(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    spec = resource.get("spec") or {}
    if resource.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    template = spec.get("template")
    return template.get("spec") if isinstance(template, dict) else None


def render_kustomization(directory: Path = K8S_BASE) -> list[dict[str, Any]]:
    """The resources ``kubectl kustomize directory`` would print, in the same order."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - _KUSTOMIZE_FIELDS
    if unknown:
        raise ValueError(f"render.py does not implement kustomize fields {sorted(unknown)}")
    resources: list[dict[str, Any]] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            resources += render_kustomization(path)
        else:
            resources += _load_documents(path)
    resources = copy.deepcopy(resources)
    namespace = kustomization.get("namespace")
    rules = kustomization.get("images", [])
    for resource in resources:
        if namespace and resource["kind"] not in _CLUSTER_SCOPED:
            resource.setdefault("metadata", {})["namespace"] = namespace
        pod = _pod_spec(resource)
        if pod:
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                container["image"] = _retag(container["image"], rules)
    return resources


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    pairs = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            pairs.append((op.upper(), rest.strip()))
    return pairs


def dockerfile_healthcheck_code(path: Path = DOCKERFILE) -> str:
    """The Python source the image's ``HEALTHCHECK CMD ["python", "-c", SOURCE]`` runs."""
    (check,) = [rest for op, rest in dockerfile_instructions(path) if op == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + 3 :])
    if command[:2] != ["python", "-c"]:
        raise ValueError(f"HEALTHCHECK is not a python one-liner: {command}")
    return str(command[2])
