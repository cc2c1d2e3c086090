"""KindProvider.up() and down() against a recording runner: the exact commands for a multi-network mesh, in order.

This proves the provider runs what the plan prints, with run-time values filled in. It does not prove the
commands work against Docker; see the README ("verified only by plan and schema").
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conformance.errors import EnvironmentBroken, ProviderError
from conformance.provider import Feature
from conformance.providers import build_config
from conformance.providers.kind.provider import KindProvider
from conformance.providers.kind.runner import Recorder, Result, run_command
from conformance.providers.kind.steps import Command, Until
from conformance.runstate import RunState
from conformance.topology import load_topology

SYNCED = ("NAME     SECRET                                    STATUS     ISTIOD\n"
          "cluster1                                           synced     istiod-1\n"
          "cluster2 istio-system/istio-remote-secret-cluster2 synced istiod-1\n")
LOCAL_ONLY = ("NAME     SECRET     STATUS     ISTIOD\n"
              "cluster1            synced     istiod-1\n")


def _recorder(**extra: str | Result | list[str | Result]) -> Recorder:
    return Recorder(answers={  # an extra pattern equal to one of these replaces it; other extras come after
        r"^kind get clusters": "",
        r"^kind get nodes --name cluster1": "cluster1-control-plane\n",
        r"^kind get nodes --name cluster2": "cluster2-control-plane\n",
        r"^docker inspect .* cluster1-control-plane": "172.19.0.2\n",
        r"^docker inspect .* cluster2-control-plane": "172.19.0.3\n",
        r"^docker network inspect kind": "172.19.0.0/16 fc00:f853:ccd:e793::/64 \n",
        r"remote-clusters": SYNCED,
        **extra,
    })


def _provider(fake_istioctl: Path, recorder: Recorder, topology: str = "multi-network",
              **flags: object) -> KindProvider:
    config = build_config(provider="kind", topology=topology, istio_version="1.28.0",
                          istioctl=str(fake_istioctl), **flags)
    return KindProvider(config, load_topology(topology), runner=recorder)


def test_multi_network_commands(fake_istioctl: Path) -> None:
    recorder = _recorder(**{r"^docker image inspect": Result(1, "", "No such image")})
    provider = _provider(fake_istioctl, recorder)
    assert Feature.LINK_RTT not in provider.features()  # nothing applied the round trip yet
    provider.up()
    run = str(provider.run_dir)
    kubectl1 = f"kubectl --kubeconfig {run}/kubeconfig --context kind-cluster1"
    istioctl = str(fake_istioctl)
    calls = recorder.rendered()
    expected_in_order = [
        "docker info --format '{{.OperatingSystem}}'",
        "kind get clusters",
        f"kind create cluster --name cluster1 --config {Path('kind-configs/multi-network/cluster1.yaml').resolve()}"
        f" --kubeconfig {run}/kubeconfig --wait 180s",
        "kind get nodes --name cluster1",
        "docker inspect -f '{{.NetworkSettings.Networks.kind.IPAddress}}' cluster1-control-plane",
        "docker exec cluster1-control-plane tc qdisc add dev lo parent 1:4 handle 40: netem delay 0ms limit 10000",
        "docker pull docker.io/istio/pilot:1.28.0",
        "kind load docker-image quay.io/metallb/controller:v0.15.3 quay.io/metallb/speaker:v0.15.3 "
        "docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 python:3.12-alpine "
        "meshconf/locust:2.47.0-hdrhistogram-0.10.8 --name cluster1",
        "docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}'",
        f"{kubectl1} apply -f https://raw.githubusercontent.com/metallb/metallb/v0.15.3/config/manifests/"
        "metallb-native.yaml",
        f"{kubectl1} apply -f {run}/cluster1/metallb-pool.yaml",
        f"{kubectl1} apply -f {run}/cluster1/istio-system.yaml -f {run}/cluster1/cacerts.yaml",
        f"{istioctl} install -y -f {run}/cluster1/istio.yaml --kubeconfig {run}/kubeconfig --context kind-cluster1",
        f"{istioctl} install -y -f {run}/cluster1/eastwest-gateway.yaml --kubeconfig {run}/kubeconfig "
        "--context kind-cluster1",
        f"{kubectl1} apply -f {run}/cluster1/expose.yaml",
        f"{istioctl} create-remote-secret --name=cluster2 --server=https://172.19.0.3:6443 "
        f"--kubeconfig {run}/kubeconfig --context kind-cluster2",
        f"{kubectl1} apply -f -",
        f"{kubectl1} -n istio-system rollout status deployment/istiod --timeout=300s",
        f"{istioctl} remote-clusters --kubeconfig {run}/kubeconfig --context kind-cluster1",
        "docker exec cluster1-control-plane tc qdisc add dev eth0 parent 1:4 handle 40: netem delay 12.5ms "
        "limit 10000",
        f"{kubectl1} apply -f {run}/cluster1/smoke-probe.yaml",
    ]
    positions = [calls.index(c) for c in expected_in_order]
    assert positions == sorted(positions)
    assert not any("ip route add" in c for c in calls)  # different networks: no routes
    # the host keeps kind's own 127.0.0.1 kubeconfig: it is never pointed at container addresses
    assert not any(c.startswith("kubectl config set-cluster") for c in calls)
    # the MetalLB pools and link targets were rebuilt from the discovered subnet, not the assumed one
    pools = (provider.run_dir / "cluster1" / "metallb-pool.yaml").read_text()
    assert "172.19.255.1/32" in pools and "172.19.255.2-172.19.255.30" in pools
    assert ("docker exec cluster1-control-plane tc filter add dev eth0 parent 1:0 protocol ip prio 1 u32 match ip "
            "dst 172.19.255.32/27 flowid 1:4") in calls
    assert oct(os.stat(provider.run_dir / "cluster1" / "cacerts.yaml").st_mode & 0o777) == "0o600"
    # the remote secret went from istioctl straight into kubectl's stdin, never to a file
    assert recorder.stdins[calls.index(f"{kubectl1} apply -f -")] == ""
    assert Feature.LINK_RTT in provider.features()  # the links step ran
    provider.down()
    assert recorder.rendered()[-3:] == [
        f"kind delete cluster --name cluster1 --kubeconfig {run}/kubeconfig",
        f"kind delete cluster --name cluster2 --kubeconfig {run}/kubeconfig",
        "kind get clusters"]
    assert not provider.run_dir.exists()


def test_images_are_pulled_only_when_the_host_lacks_them(fake_istioctl: Path) -> None:
    recorder = _recorder(**{r"^docker image inspect python": Result(1, "", "No such image")})
    provider = _provider(fake_istioctl, recorder)
    provider.up()
    pulls = [c for c in recorder.rendered() if c.startswith(("docker pull", "docker build"))]
    assert pulls == ["docker pull python:3.12-alpine"]
    provider.down()


def test_a_failed_step_deletes_only_what_this_run_created(fake_istioctl: Path) -> None:
    recorder = _recorder(**{r"install -y -f": Result(1, "", "Error: failed to install\n")})
    provider = _provider(fake_istioctl, recorder)
    with pytest.raises(ProviderError, match="failed to install"):
        provider.up()
    deleted = [c for c in recorder.rendered() if c.startswith("kind delete cluster")]
    assert [c.split(" --kubeconfig ")[0] for c in deleted[-2:]] == ["kind delete cluster --name cluster1",
                                                                     "kind delete cluster --name cluster2"]


def test_a_kernel_without_netem_stops_the_run_early_with_the_fix(fake_istioctl: Path) -> None:
    recorder = _recorder(**{r"netem delay 0ms": Result(2, "", "Error: Specified qdisc kind is unknown.\n")})
    provider = _provider(fake_istioctl, recorder)
    with pytest.raises(ProviderError) as raised:
        provider.up()
    message = str(raised.value)
    assert "Specified qdisc kind is unknown" in message and "sudo modprobe sch_netem" in message
    assert "\n" not in message
    calls = recorder.rendered()
    assert not any("metallb" in c or "install -y" in c or c.startswith("docker pull") for c in calls)
    assert calls[-1] == "kind get clusters" and calls[-2].startswith("kind delete cluster --name cluster2")


@pytest.mark.parametrize(("system", "docker_os", "shown"), [
    ("Darwin", "Docker Desktop", "on Darwin Docker runs containers in a VM"),
    ("Linux", "Docker Desktop", "Docker Desktop runs containers in a VM"),
])
def test_hosts_that_cannot_reach_containers_are_refused(fake_istioctl: Path, monkeypatch: pytest.MonkeyPatch,
                                                        system: str, docker_os: str, shown: str) -> None:
    import platform

    monkeypatch.setattr(platform, "system", lambda: system)
    recorder = _recorder(**{r"^docker info": docker_os})
    with pytest.raises(EnvironmentBroken, match=shown) as raised:
        _provider(fake_istioctl, recorder).up()
    assert "\n" not in str(raised.value)
    assert recorder.rendered() == ["docker info --format '{{.OperatingSystem}}'"]  # nothing created


def test_the_sync_wait_needs_a_synced_row_for_every_cluster(tmp_path: Path) -> None:
    """istioctl lists the local cluster first and remote clusters only once their secrets are read."""
    syncing = SYNCED.replace("cluster2 synced", "cluster2 syncing")
    recorder = Recorder(answers={r"remote-clusters": [LOCAL_ONLY, syncing, SYNCED]})
    command = Command(("istioctl", "remote-clusters"), attempts=5, until=Until("synced", ("cluster1", "cluster2")))
    run_command(recorder, command, {}, tmp_path, lambda _line: None, poll_interval_s=0)
    assert len(recorder.calls) == 3  # the local cluster alone, or a syncing row, never passed
    stuck = Recorder(answers={r"remote-clusters": LOCAL_ONLY})
    with pytest.raises(ProviderError, match="output did not show that it lists cluster1, cluster2 as synced"):
        run_command(stuck, Command(("istioctl", "remote-clusters"), attempts=3,
                                   until=Until("synced", ("cluster1", "cluster2"))), {}, tmp_path,
                    lambda _line: None, poll_interval_s=0)


def test_reuse_never_creates_or_deletes_clusters(fake_istioctl: Path) -> None:
    recorder = _recorder(**{r"^kind get clusters": "cluster1\ncluster2\n"})
    provider = _provider(fake_istioctl, recorder, reuse=True)
    provider.up()
    assert Feature.LINK_RTT in provider.features()  # reuse applies the round trip too
    provider.down()
    calls = recorder.rendered()
    assert not any(c.startswith(("kind create", "kind delete", "istioctl install")) for c in calls)
    assert any(c.startswith("kind export kubeconfig --name cluster1") for c in calls)
    assert any("netem delay 12.5ms" in c for c in calls)


def test_existing_clusters_without_reuse_are_a_usage_error(fake_istioctl: Path) -> None:
    provider = _provider(fake_istioctl, _recorder(**{r"^kind get clusters": "cluster1\n"}))
    with pytest.raises(Exception, match="already exist; pass --reuse"):
        provider.up()


def test_state_is_kept_until_kind_confirms_the_clusters_are_gone(fake_istioctl: Path) -> None:
    recorder = _recorder()
    provider = _provider(fake_istioctl, recorder)
    provider.up()
    assert provider.run_dir is not None
    run_dir = provider.run_dir
    stubborn = Recorder(answers={r"^kind get clusters": "cluster2\nsomeone-elses\n"})
    with pytest.raises(ProviderError, match=f"kind clusters cluster2 still exist .* run `meshconf down {run_dir}`"):
        KindProvider.cleanup(run_dir, stubborn)
    assert run_dir.exists() and RunState(run_dir).read()["created"] == ["cluster2"]
    retry = Recorder(answers={r"^kind get clusters": "someone-elses\n"})
    KindProvider.cleanup(run_dir, retry)  # what `meshconf down` runs again
    assert retry.rendered() == [f"kind delete cluster --name cluster2 --kubeconfig {run_dir}/kubeconfig",
                                "kind get clusters"]
    assert not run_dir.exists()
