"""KindProvider.up() against a recording runner: the exact commands for a multi-network mesh, in order.

This proves the provider runs what the plan prints, with run-time values filled in. It does not prove the
commands work against Docker; see the README ("verified only by plan and schema").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.config import RunConfig
from conformance.errors import ProviderError
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.runner import Recorder
from conformance.topology import load_topology

SYNCED = ("NAME SECRET STATUS ISTIOD\ncluster1  synced istiod-1\n"
          "cluster2 istio-system/istio-remote-secret-cluster2 synced istiod-1\n")


def _recorder(**extra: str) -> Recorder:
    return Recorder(answers={
        r"^kind get clusters": "",
        r"^docker inspect .* cluster1-control-plane": "172.19.0.2\n",
        r"^docker inspect .* cluster2-control-plane": "172.19.0.3\n",
        r"^docker network inspect kind": "172.19.0.0/16 fc00:f853:ccd:e793::/64 \n",
        r"remote-clusters": SYNCED,
        **extra,
    })


def _provider(fake_istioctl: Path, recorder: Recorder, **flags: object) -> KindProvider:
    config = RunConfig.build(provider="kind", topology="multi-network", istio_version="1.28.0",
                             istioctl=str(fake_istioctl), **flags)
    return KindProvider(config, load_topology("multi-network"), runner=recorder)


def test_multi_network_commands(fake_istioctl: Path) -> None:
    recorder = _recorder()
    provider = _provider(fake_istioctl, recorder)
    provider.up()
    run = str(provider.run_dir)
    kubectl1 = f"kubectl --kubeconfig {run}/kubeconfig --context kind-cluster1"
    istioctl = str(fake_istioctl)
    calls = recorder.rendered()
    expected_in_order = [
        "kind get clusters",
        f"kind create cluster --name cluster1 --config {Path('kind-configs/multi-network/cluster1.yaml').resolve()}"
        f" --kubeconfig {run}/kubeconfig --wait 180s",
        "docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' cluster1-control-plane",
        f"kubectl config set-cluster kind-cluster1 --server=https://172.19.0.2:6443 --kubeconfig {run}/kubeconfig",
        "docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}'",
        f"{kubectl1} apply -f https://raw.githubusercontent.com/metallb/metallb/v0.15.3/config/manifests/"
        "metallb-native.yaml",
        f"{kubectl1} apply -f {run}/cluster1/metallb-pool.yaml",
        f"{kubectl1} apply -f {run}/cluster1/istio-system.yaml -f {run}/cluster1/cacerts.yaml",
        f"{istioctl} install -y -f {run}/cluster1/istio.yaml --kubeconfig {run}/kubeconfig --context kind-cluster1",
        f"{istioctl} install -y -f {run}/cluster1/eastwest-gateway.yaml --kubeconfig {run}/kubeconfig "
        "--context kind-cluster1",
        f"{kubectl1} apply -f {run}/cluster1/expose.yaml",
        f"{istioctl} create-remote-secret --name=cluster2 --kubeconfig {run}/kubeconfig --context kind-cluster2",
        f"{kubectl1} apply -f -",
        f"{kubectl1} -n istio-system rollout status deployment/istiod --timeout=300s",
        f"{istioctl} remote-clusters --kubeconfig {run}/kubeconfig --context kind-cluster1",
        f"{kubectl1} apply -f {run}/cluster1/smoke-probe.yaml",
    ]
    positions = [calls.index(c) for c in expected_in_order]
    assert positions == sorted(positions)
    assert not any("ip route add" in c for c in calls)  # different networks: no routes
    # the MetalLB pools were rebuilt from the discovered subnet, not the assumed one
    pools = (provider.run_dir / "cluster1" / "metallb-pool.yaml").read_text()
    assert "172.19.255.1/32" in pools and "172.19.255.2-172.19.255.30" in pools
    assert oct(os.stat(provider.run_dir / "cluster1" / "cacerts.yaml").st_mode & 0o777) == "0o600"
    # the remote secret went from istioctl straight into kubectl's stdin, never to a file
    assert recorder.stdins[calls.index(f"{kubectl1} apply -f -")] == ""
    provider.down()
    assert recorder.rendered()[-2:] == ["kind delete cluster --name cluster1", "kind delete cluster --name cluster2"]
    assert not provider.run_dir.exists()


def test_a_failed_step_deletes_only_what_this_run_created(fake_istioctl: Path) -> None:
    recorder = _recorder()
    original = recorder.run

    def failing(argv, stdin=None, timeout_s=600.0):  # type: ignore[no-untyped-def]
        result = original(argv, stdin, timeout_s)
        if "install" in argv and "-y" in argv:
            from conformance.providers.kind.runner import Result
            return Result(1, "", "Error: failed to install\n")
        return result

    recorder.run = failing  # type: ignore[method-assign]
    provider = _provider(fake_istioctl, recorder)
    with pytest.raises(ProviderError, match="failed to install"):
        provider.up()
    deleted = [c for c in recorder.rendered() if c.startswith("kind delete cluster")]
    assert deleted[-2:] == ["kind delete cluster --name cluster1", "kind delete cluster --name cluster2"]


def test_reuse_never_creates_or_deletes_clusters(fake_istioctl: Path) -> None:
    recorder = _recorder(**{r"^kind get clusters": "cluster1\ncluster2\n"})
    provider = _provider(fake_istioctl, recorder, reuse=True)
    provider.up()
    provider.down()
    calls = recorder.rendered()
    assert not any(c.startswith(("kind create", "kind delete", "istioctl install")) for c in calls)
    assert any(c.startswith("kind export kubeconfig --name cluster1") for c in calls)


def test_existing_clusters_without_reuse_are_a_usage_error(fake_istioctl: Path) -> None:
    provider = _provider(fake_istioctl, _recorder(**{r"^kind get clusters": "cluster1\n"}))
    with pytest.raises(Exception, match="already exist; pass --reuse"):
        provider.up()
