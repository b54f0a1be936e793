"""The Kubernetes base runs every service highly available (issue 18): two or more replicas,
spread over nodes, at most one taken by a voluntary disruption; deploy/ha holds the operators'
resources for the broker and the database."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from deploy.render import K8S_BASE, ROOT, render_kustomization

SERVICES = ("gateway", "issuer", "revocation", "keys")


def _by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {
        doc["metadata"]["name"]: doc
        for doc in render_kustomization(K8S_BASE)
        if doc["kind"] == kind
    }


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_runs_two_replicas_or_more(service: str) -> None:
    deployment = _by_kind("Deployment")[f"tessera-{service}"]
    autoscaler = _by_kind("HorizontalPodAutoscaler").get(f"tessera-{service}")
    least = autoscaler["spec"]["minReplicas"] if autoscaler else deployment["spec"]["replicas"]
    assert least >= 2


@pytest.mark.parametrize("service", SERVICES)
def test_replicas_of_a_service_avoid_sharing_a_node_and_a_zone(service: str) -> None:
    pod = _by_kind("Deployment")[f"tessera-{service}"]["spec"]["template"]["spec"]
    terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    keys = {term["podAffinityTerm"]["topologyKey"] for term in terms}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for term in terms:
        selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == service


@pytest.mark.parametrize("service", SERVICES)
def test_a_disruption_takes_at_most_one_replica(service: str) -> None:
    budget = _by_kind("PodDisruptionBudget")[f"tessera-{service}"]
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == service


def test_operator_resources_keep_a_majority_and_a_synchronous_standby() -> None:
    rabbit = yaml.safe_load((ROOT / "deploy/ha/rabbitmq.yaml").read_text())
    assert rabbit["kind"] == "RabbitmqCluster" and rabbit["spec"]["replicas"] == 3
    assert "quorum_queue.initial_group_size = 3" in rabbit["spec"]["rabbitmq"]["additionalConfig"]
    postgres = yaml.safe_load((ROOT / "deploy/ha/postgres.yaml").read_text())
    assert postgres["kind"] == "Cluster" and postgres["spec"]["instances"] >= 2
    assert postgres["spec"]["minSyncReplicas"] >= 1
    assert postgres["spec"]["postgresql"]["parameters"]["synchronous_commit"] == "on"
