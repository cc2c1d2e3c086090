"""What has, and what has not, been executed against a real cluster, per plan step: one table.

This project's CI has no Docker engine, so no step of the kind plan has run against real clusters here. What
the tests do prove is written per step; ``meshconf plan`` prints both halves under every step, and the README's
"What is verified here" section lists the same rows (a test keeps them in step).
"""

from __future__ import annotations

__all__ = ["NOT_RUN", "VERIFICATION"]

NOT_RUN = "no step has been executed against Docker, kind, istioctl or a real API server in this project's CI"

VERIFICATION: dict[str, tuple[str, str]] = {
    # step key: (verified here, not verified here)
    "clusters": ("kind configs validate against kind's v1alpha4 types and match kind-configs/; argv, retries and "
                 "--kubeconfig (recorded runner)",
                 "that kind creates the clusters"),
    "addresses": ("node names follow kind's namer; the captured addresses fill later commands (recorded runner)",
                  "docker's answers"),
    "kernel": ("it runs before anything is installed and its failure carries the fix (recorded runner)",
               "that the throwaway qdiscs load sch_prio/sch_netem/cls_u32 on a real kernel"),
    "images": ("every image the manifests and IstioOperators name is pulled or built once and loaded into every "
               "cluster (plan assertions)",
               "docker pull/build and kind load against real registries"),
    "load-balancers": ("MetalLB pools validate (metallb.io/v1beta1 fields) and never overlap",
                       "MetalLB assigning and announcing the addresses"),
    "routes": ("routes only between clusters of one network, from every node (plan assertions)",
               "that pods reach pods across clusters"),
    "ca": ("cacerts holds the plug-in CA layout; written 0600; never printed",
           "istiod loading it"),
    "install": ("IstioOperator overlays validate (Istio's operator API fields); hub/tag are the preloaded images; "
                "DNS proxying is on",
                "istioctl install accepting them and istiod starting"),
    "east-west": ("the gateway matches gen-eastwest-gateway.sh (1.28); Gateway/VirtualService validate against "
                  "Istio's CRD schemas",
                  "the gateway getting its MetalLB address and passing traffic"),
    "remotes": ("the remote profile overlay validates and points at its primary's pinned gateway address",
                "istioctl install of the remote profile, injection through the primary"),
    "remote-secrets": ("secrets go from istioctl straight into kubectl's stdin, with --server on the kind "
                       "network (recorded runner)",
                       "istiod reaching the other API servers"),
    "wait": ("the poll passes only when every cluster has its own synced row (recorded runner, parser tests)",
             "istiod's real output"),
    "links": ("half the RTT of netem on every node towards the other clusters' nodes, pods, services and load "
              "balancers, both ways; faults change and reset the same qdiscs (plan and recorded runner)",
              "the measured round trip on real nodes"),
    "probes": ("probe manifests validate against Kubernetes 1.34 (strict)",
               "the pods starting with an injected sidecar"),
    "teardown": ("only clusters the run created, with the run's own --kubeconfig; the state stays until `kind get "
                 "clusters` no longer lists them (recorded runner)",
                 "kind deleting them"),
    # faults the lifecycle checks run (after the bring-up)
    "fault-restart": ("the commands, the rollout wait and the poll until every cluster is synced again (recorded "
                      "runner)",
                      "istiod restarting and its proxies reconnecting"),
    "fault-stop": ("scale to 0 and the wait for istiod's pods to go (recorded runner)",
                   "proxies keeping their config while istiod is gone"),
    "fault-start": ("scale back to 1, the rollout wait and the poll until synced (recorded runner)",
                    "istiod coming back and serving the proxies"),
    "fault-status": ("istioctl remote-clusters' table parsed into each cluster's sync status, one istiod or several "
                     "(parser tests, recorded runner)",
                     "istiod's real output"),
    "fault-rotate-secret": ("a new reader token Secret (validated against Kubernetes 1.34), create-remote-secret "
                            "--secret-name piped into kubectl apply, the previous rotation's token deleted, never the "
                            "install's (recorded runner)",
                            "the token controller filling the token, istiod switching to the new credential"),
    "fault-break-secret": ("the install's credential with TestBadRemoteSecret's unreachable server, piped into "
                           "kubectl apply (recorded runner)",
                           "istiod marking the cluster syncing, then timeout"),
    "fault-restore-secret": ("the secret written again with the API server's address on the kind network "
                             "(recorded runner)",
                             "istiod syncing the cluster again"),
    "fault-root": ("each step's cacerts (combined root, new intermediates, new root alone) from conformance.certs, "
                   "written 0600, never printed; istiod restarted in every primary; pods annotated (recorded runner, "
                   "certs tests)",
                   "istiod loading the new cacerts, the kubelet refreshing istio-ca-root-cert, istio-agent re-signing"),
    # meshconf upgrade
    "preload": ("the target version's pilot/proxyv2 are pulled once and loaded into every cluster before the "
                "canary install (plan assertions)",
                "the pulls and loads"),
    "canary": ("overlays validate with the revision; held connections start before it (recorded workflow)",
               "two control planes side by side"),
    "gateways": ("gateway overlays validate with the revision (recorded workflow)",
                 "the in-place gateway upgrade"),
    "tag": ("the tag command (recorded workflow)",
            "injection switching to the new revision"),
    "restart": ("continuous traffic and held connections are judged against their budgets (recorded workflow with "
                "recorded probe answers)",
                "real resets and errors during a real upgrade"),
}
