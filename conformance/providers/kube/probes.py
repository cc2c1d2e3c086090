"""The probe workload as Kubernetes manifests: Namespace, ServiceAccount, ConfigMap, Deployment, Service.

No image is built or pushed: the probe runs in the stock ``python:3.12-alpine`` image with ``probe.py``
mounted from a ConfigMap. Its identity comes from the topology (cluster, network, region, zone) and from the
downward API (namespace, pod name, service account). The control port (15100) is excluded from sidecar
capture with ``traffic.sidecar.istio.io/excludeInboundPorts`` and reached through the API server's pod proxy.

An out-of-mesh probe lives in the same namespace as the check's other probes (checks address services by
their namespace) and opts out of injection per pod, with the ``sidecar.istio.io/inject: "false"`` label.
"""

from __future__ import annotations

from typing import Any

from conformance.provider import DATA_PORT, ProbeSpec
from conformance.topology import Cluster

__all__ = ["CONTROL_PORT", "PROBE_CONFIGMAP", "PROBE_IMAGE", "namespace_doc", "probe_docs", "probe_image",
           "probe_workload_name"]

PROBE_IMAGE = "python:3.12-alpine"
CONTROL_PORT = 15100
PROBE_CONFIGMAP = "meshconf-probe"
MANAGED_BY = {"app.kubernetes.io/managed-by": "meshconf"}
_PROBE_UID = 1000  # never 1337: Istio's proxy uid bypasses capture

DNS_PROXYING = '{"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}}'
"""The pod annotation that turns on istio-agent's DNS proxying for one pod (the egress check needs it on
clusters whose mesh default leaves it off)."""


def probe_image(hub: str | None = None) -> str:
    """The stock Python image the probe runs in: Docker Hub's, or a Docker Hub mirror's (``--image-hub``)."""
    return f"{hub}/library/{PROBE_IMAGE}" if hub else PROBE_IMAGE


def probe_workload_name(spec: ProbeSpec) -> str:
    """The Deployment of a probe workload: ``<service>-<version>``."""
    return f"{spec.service}-{spec.version}"


def namespace_doc(name: str, injection: bool = True, labels: dict[str, str] | None = None,
                  revision: str | None = None) -> dict[str, Any]:
    """A namespace meshconf owns. ``injection`` labels it ``istio-injection=enabled`` (the default revision or
    the ``default`` tag), or ``istio.io/rev=<revision>`` for a revisioned control plane (Istio's "Canary
    Upgrades": a namespace must not carry both labels)."""
    all_labels = {**MANAGED_BY, **(labels or {})}
    if injection and revision:
        all_labels["istio.io/rev"] = revision
    elif injection:
        all_labels["istio-injection"] = "enabled"
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": all_labels}}


def probe_docs(spec: ProbeSpec, cluster: Cluster, probe_source: str, image: str = PROBE_IMAGE,
               revision: str | None = None) -> list[dict[str, Any]]:
    """Every manifest of one probe workload, in apply order (namespace first)."""
    namespace = spec.namespace
    name = probe_workload_name(spec)
    labels = spec.workload_labels
    pod_labels = dict(labels)
    if not spec.in_mesh:
        pod_labels["sidecar.istio.io/inject"] = "false"
    env = [
        {"name": "PROBE_CLUSTER", "value": cluster.name},
        {"name": "PROBE_NETWORK", "value": cluster.network},
        {"name": "PROBE_REGION", "value": cluster.region},
        {"name": "PROBE_ZONE", "value": spec.zone or cluster.zone},
        {"name": "PROBE_SERVICE", "value": spec.service},
        {"name": "PROBE_VERSION", "value": spec.version},
        {"name": "PROBE_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "PROBE_INSTANCE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "PROBE_SERVICE_ACCOUNT", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "PROBE_PORTS", "value": ",".join(str(p) for p in spec.ports)},
        {"name": "PROBE_CONTROL_PORT", "value": str(CONTROL_PORT)},
    ]
    pod_spec: dict[str, Any] = {
        "serviceAccountName": spec.account,
        "securityContext": {"runAsNonRoot": True, "runAsUser": _PROBE_UID, "runAsGroup": _PROBE_UID},
        "containers": [{
            "name": "probe",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "/probe/probe.py"],
            "env": env,
            "ports": [{"name": _port_name(p), "containerPort": p, "protocol": "TCP"} for p in spec.ports]
            + [{"name": "control", "containerPort": CONTROL_PORT, "protocol": "TCP"}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": CONTROL_PORT}, "periodSeconds": 2},
            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
            "volumeMounts": [{"name": "probe", "mountPath": "/probe", "readOnly": True}],
        }],
        "volumes": [{"name": "probe", "configMap": {"name": PROBE_CONFIGMAP}}],
    }
    if spec.zone:
        pod_spec["nodeSelector"] = {"topology.kubernetes.io/zone": spec.zone}
    return [
        namespace_doc(namespace, revision=revision),
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": spec.account, "namespace": namespace, "labels": dict(MANAGED_BY)}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": PROBE_CONFIGMAP, "namespace": namespace, "labels": dict(MANAGED_BY)},
         "data": {"probe.py": probe_source}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": name, "namespace": namespace, "labels": {**labels, **MANAGED_BY}},
         "spec": {
             "replicas": spec.replicas,
             "selector": {"matchLabels": {"app": spec.service, "version": spec.version}},
             "template": {
                 "metadata": {"labels": pod_labels, "annotations": {
                     "traffic.sidecar.istio.io/excludeInboundPorts": str(CONTROL_PORT),
                     # istio-agent's DNS proxy for this pod, whatever the mesh's default: a ServiceEntry host
                     # resolves and an unknown name does not (istio.io "DNS Proxying": per-pod proxy config)
                     "proxy.istio.io/config": DNS_PROXYING,
                 }},
                 "spec": pod_spec,
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": spec.service, "namespace": namespace, "labels": {"app": spec.service, **MANAGED_BY}},
         "spec": {"selector": {"app": spec.service},
                  "ports": [{"name": _port_name(p), "port": p, "targetPort": p, "protocol": "TCP"}
                            for p in spec.ports]}},
    ]


def _port_name(port: int) -> str:
    # Istio picks the protocol from the port name: "http" or "http-<suffix>".
    return "http" if port == DATA_PORT else f"http-{port}"
