"""What has, and what has not, been executed against a real Docker engine, per k3s plan step: one table.

This project's CI has no Docker engine, so no step of the k3s plan has run against real containers here. The
tests run the provider's ``up`` against a recording Docker engine (the Docker Engine API on 127.0.0.1, under
the real docker-py and testcontainers), with the host commands recorded too; what that proves is written per
step. ``meshconf plan --provider k3s`` prints both halves under every step, and the README's "What is verified
here" lists the same rows (a test keeps them in step).
"""

from __future__ import annotations

__all__ = ["NOT_RUN", "VERIFICATION"]

NOT_RUN = ("no step has been executed against a Docker engine, k3s, istioctl or a real API server in this "
           "project's CI")

VERIFICATION: dict[str, tuple[str, str]] = {
    # step key: (verified here, not verified here)
    "images": ("every image the IstioOperators and probe manifests name is pulled (or built) once and saved where "
               "every node mounts it (recording engine)",
               "real pulls and `docker save` archives"),
    "network": ("the network gets a /24 no other docker network overlaps, with its gateway, the run's label and "
                "testcontainers' session label (recording engine)",
                "docker creating it"),
    "clusters": ("each node's create request (image, command, pinned address, privileged, tmpfs, cgroup and images "
                 "mounts, labels) is the printed `docker run`; servers wait for k3s's readiness log; Ryuk is asked "
                 "to reap the session, or is off for a kept mesh (recording engine)",
                 "that k3s starts in Docker and that flannel and ServiceLB work there"),
    "kubeconfig": ("contexts are renamed per cluster and point at the server's address; the file is 0600 and never "
                   "printed (recording engine)",
                   "k3s's real kubeconfig and certificate SANs"),
    "nodes": ("every cluster is waited on with its own context (recorded commands)",
              "nodes becoming Ready"),
    "preload": ("every saved image is imported in every node, through docker exec (recording engine)",
                "containerd importing them and pods finding them"),
    "routes": ("routes only between clusters of one network, from every node to the other server (plan and "
               "recording engine)",
               "that pods reach pods across clusters"),
    "ca": ("cacerts holds the plug-in CA layout; written 0600; never printed",
           "istiod loading it"),
    "install": ("IstioOperator overlays validate (Istio's operator API fields); hub/tag are the preloaded images; "
                "DNS proxying is on",
                "istioctl install accepting them and istiod starting"),
    "east-west": ("the gateway matches gen-eastwest-gateway.sh (1.28) but for its Service's status port (15022: "
                  "ServiceLB gives the ingress gateway 15021 on the node); Gateway/VirtualService validate against "
                  "Istio's CRD schemas",
                  "the gateway getting its node's address from ServiceLB and passing traffic"),
    "remotes": ("the remote profile overlay validates and points at its primary's server address",
                "istioctl install of the remote profile, injection through the primary"),
    "remote-secrets": ("secrets go from istioctl straight into kubectl's stdin, with --server at the other "
                       "cluster's server address (recorded commands)",
                       "istiod reaching the other API servers"),
    "wait": ("the poll passes only when every cluster has its own synced row (recorded runner, parser tests)",
             "istiod's real output"),
    "probes": ("probe manifests validate against Kubernetes 1.34 (strict)",
               "the pods starting with an injected sidecar"),
    "teardown": ("only the containers and the network the run recorded; already gone is fine (Ryuk); the state "
                 "stays until both are removed (recording engine)",
                 "docker removing them"),
}
