"""The probe workload's manifests (shared by the kind and existing providers)."""

from __future__ import annotations

import json

from conformance.probe import probe_source
from conformance.provider import ProbeSpec
from conformance.providers.kube.probes import CONTROL_PORT, PROBE_IMAGE, probe_docs
from conformance.providers.kube.validation import validate_kubernetes
from conformance.topology import load_topology


def _docs(**spec: object) -> dict[str, dict]:
    cluster = load_topology("multi-network").cluster("cluster2")
    probe = ProbeSpec(service="server", namespace="meshconf-x-abc123", cluster="cluster2", **spec)  # type: ignore[arg-type]
    docs = probe_docs(probe, cluster, probe_source().read_text())
    validate_kubernetes(docs)
    return {d["kind"]: d for d in docs}


def test_in_mesh_probe() -> None:
    docs = _docs(service_account="alice", ports=(8080, 9090), zone="zone2")
    assert docs["Namespace"]["metadata"]["labels"]["istio-injection"] == "enabled"
    template = docs["Deployment"]["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["traffic.sidecar.istio.io/excludeInboundPorts"] == str(CONTROL_PORT)
    # DNS proxying per pod (the egress check needs a ServiceEntry host to resolve on any mesh)
    assert json.loads(annotations["proxy.istio.io/config"]) == {
        "proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}}
    assert "sidecar.istio.io/inject" not in template["metadata"]["labels"]
    container = template["spec"]["containers"][0]
    assert container["image"] == PROBE_IMAGE
    env = {e["name"]: e for e in container["env"]}
    assert env["PROBE_CLUSTER"]["value"] == "cluster2" and env["PROBE_NETWORK"]["value"] == "network2"
    assert env["PROBE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["PROBE_SERVICE_ACCOUNT"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName"
    assert template["spec"]["serviceAccountName"] == "alice"
    assert template["spec"]["securityContext"]["runAsUser"] != 1337
    assert docs["Service"]["spec"]["ports"][0] == {"name": "http", "port": 8080, "targetPort": 8080, "protocol": "TCP"}
    assert docs["ConfigMap"]["data"]["probe.py"] == probe_source().read_text()


def test_out_of_mesh_probe_opts_out_per_pod() -> None:
    docs = _docs(in_mesh=False)
    assert docs["Deployment"]["spec"]["template"]["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
