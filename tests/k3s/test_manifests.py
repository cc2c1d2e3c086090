"""Every manifest the k3s provider generates validates against the schema that owns it (Istio's CRDs, Kubernetes
1.34 strict, Istio's operator API), as kind's do (tests/kind/test_manifests.py)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from conformance.errors import ManifestError
from conformance.providers.kube.schemas import validate_manifest

from .conftest import TOPOLOGIES


def _documents(steps: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(manifest.path, dict(doc)) for step in steps for manifest in step.manifests for doc in manifest.docs]


@pytest.mark.parametrize("topology", [*TOPOLOGIES, "two-zones"])
def test_every_generated_manifest_validates(topology: str, plan_for: Callable[[str], Any]) -> None:
    owners = {f"{path}: {doc['kind']} {doc['metadata']['name']}": validate_manifest(doc)
              for path, doc in _documents(plan_for(topology))}
    kinds = {key.split(": ")[1].split()[0] for key in owners}
    assert {"Namespace", "Secret", "IstioOperator", "ServiceAccount", "ConfigMap", "Deployment", "Service"} <= kinds
    gateways = topology in ("multi-network", "primary-remote")
    assert ("Gateway" in kinds) is gateways
    assert set(owners.values()) == ({"istio", "kubernetes", "install"} if gateways else {"kubernetes", "install"})


def test_the_validator_rejects_a_typo_in_the_east_west_gateway(plan_for: Callable[[str], Any]) -> None:
    gateway = copy.deepcopy(next(doc for path, doc in _documents(plan_for("multi-network"))
                                 if path.endswith("eastwest-gateway.yaml")))  # the plan is shared by other tests
    gateway["spec"]["components"]["ingressGateways"][0]["k8s"]["service"]["ports"][0]["prot"] = 15021
    with pytest.raises(ManifestError, match=r"unknown field .*prot"):
        validate_manifest(gateway)
