"""The distributed-Locust manifests (workloads/locust/kubernetes/): rendered, then validated against the
Kubernetes schemas when kubernetes-validate is installed (the ``kind`` extra), and structurally always."""

from __future__ import annotations

import json
from typing import Any

import pytest

from conformance.errors import ProviderError
from conformance.load import HttpTarget, LoadProfile
from conformance.load.distributed import HDRHISTOGRAM, LOCUST_IMAGE, LOCUST_VERSION, distributed_manifests
from conformance.providers import build_config

TARGET = HttpTarget("server.ns.svc.cluster.local", 8080, label="in-cluster")


def _docs(workers: int = 3) -> dict[str, dict[str, Any]]:
    profile = LoadProfile.from_config(build_config(), rate_rps=600, users=12)
    docs = distributed_manifests("meshconf-load", TARGET, profile, workers)
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def test_manifests_are_valid_kubernetes() -> None:
    pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is not installed (the kind extra)")
    from conformance.providers.kube.validation import validate_kubernetes

    validate_kubernetes(_docs().values())  # strict: an unknown field is an error, as kubectl --validate=strict


def test_manifests_hold_together() -> None:
    docs = _docs(workers=3)
    assert set(docs) == {
        "ConfigMap/meshconf-locust", "ConfigMap/meshconf-locust-results", "ServiceAccount/meshconf-locust-master",
        "Role/meshconf-locust-results", "RoleBinding/meshconf-locust-results", "Service/meshconf-locust-master",
        "Job/meshconf-locust-master", "Deployment/meshconf-locust-worker",
    }
    assert {d["metadata"]["namespace"] for d in docs.values()} == {"meshconf-load"}

    data = docs["ConfigMap/meshconf-locust"]["data"]
    assert "class MeshconfUser(FastHttpUser)" in data["locustfile.py"]
    plan = json.loads(data["plan.json"])
    assert (plan["rate_rps"], plan["users"], plan["result"]) == (600.0, 12, "/results/result.json")

    master = docs["Job/meshconf-locust-master"]["spec"]["template"]
    workers = docs["Deployment/meshconf-locust-worker"]["spec"]
    assert workers["replicas"] == 3
    assert workers["selector"]["matchLabels"].items() <= workers["template"]["metadata"]["labels"].items()
    service = docs["Service/meshconf-locust-master"]["spec"]
    assert service["selector"].items() <= master["metadata"]["labels"].items()
    assert master["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false"  # or the Job never ends
    args = master["spec"]["containers"][0]["args"]
    assert args[args.index("--expect-workers") + 1] == "3" and args[args.index("-u") + 1] == "12"
    assert args[args.index("--host") + 1] == "http://server.ns.svc.cluster.local:8080"
    worker_args = workers["template"]["spec"]["containers"][0]["args"]
    assert worker_args[worker_args.index("--master-host") + 1] == docs["Service/meshconf-locust-master"]["metadata"][
        "name"]
    for pod in (master, workers["template"]):
        spec = pod["spec"]
        assert spec["containers"][0]["image"] == LOCUST_IMAGE
        assert "initContainers" not in spec  # nothing is installed from the internet at start-up
        assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"  # the image kind preloaded
        mounted = {m["name"] for c in spec["containers"] for m in c["volumeMounts"]}
        assert mounted <= {v["name"] for v in spec["volumes"]}
        assert {"name": "locust", "configMap": {"name": "meshconf-locust"}} in spec["volumes"]

    hold = json.loads(workers["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    assert hold == {"holdApplicationUntilProxyStarts": True}  # the worker starts after its sidecar

    role = docs["Role/meshconf-locust-results"]["rules"]
    assert role == [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["meshconf-locust-results"],
                     "verbs": ["get", "patch"]}]
    binding = docs["RoleBinding/meshconf-locust-results"]
    assert binding["subjects"][0]["name"] == master["spec"]["serviceAccountName"]


def test_more_workers_than_users_is_refused() -> None:
    with pytest.raises(ProviderError, match="workers <= users"):
        distributed_manifests("ns", TARGET, LoadProfile.from_config(build_config(), users=2), 3)


def test_the_image_carries_the_locustfiles_dependency() -> None:
    """The Dockerfile the kind provider builds from pins the same Locust and hdrhistogram as the code."""
    from pathlib import Path

    dockerfile = (Path(__file__).resolve().parents[2] / "workloads/locust/kubernetes/Dockerfile").read_text()
    assert f"ARG LOCUST_IMAGE=locustio/locust:{LOCUST_VERSION}\n" in dockerfile
    assert f"ARG HDRHISTOGRAM={HDRHISTOGRAM}\n" in dockerfile
    assert LOCUST_IMAGE.startswith(f"meshconf/locust:{LOCUST_VERSION}-")
