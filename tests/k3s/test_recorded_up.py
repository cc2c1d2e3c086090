"""K3sProvider.up() and down() under the recording Docker engine: the real testcontainers and docker-py make every
Docker call, and the engine records it; kubectl and istioctl are recorded too.

This proves the provider creates what the plan prints (network, node containers, their commands, addresses,
mounts and labels), that Ryuk is told to reap the run, that images are saved once and imported in every node,
and that nothing is left behind, also when a node fails to start. It does not prove any of it works against a
real Docker engine; see the README ("What is verified here").
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from conformance.certs import MeshCA
from conformance.errors import EnvironmentBroken, ProviderError, UsageError
from conformance.probe import probe_source
from conformance.providers import build_config
from conformance.providers.k3s.plan import NETWORK, PlanContext
from conformance.providers.k3s.provider import K3sProvider
from conformance.providers.kube.runner import Recorder
from conformance.runstate import RunState
from conformance.topology import load_topology, parse_topology

from .conftest import TWO_ZONES
from .docker_engine import Engine

SYNCED = ("NAME     SECRET                                    STATUS     ISTIOD\n"
          "cluster1                                           synced     istiod-1\n"
          "cluster2 istio-system/istio-remote-secret-cluster2 synced istiod-1\n"
          "east                                               synced     istiod-1\n"
          "west     istio-system/istio-remote-secret-west     synced     istiod-1\n")
K3S = "rancher/k3s:v1.34.11-k3s1"


def _provider(fake_istioctl: Path, topology: str = "multi-network") -> tuple[K3sProvider, Recorder]:
    mesh = parse_topology(yaml.safe_load(TWO_ZONES)) if topology == "two-zones" else load_topology(topology)
    config = build_config(provider="k3s", topology="multi-network" if topology == "two-zones" else topology,
                          istio_version="1.28.0", istioctl=str(fake_istioctl))
    recorder = Recorder(answers={"remote-clusters": SYNCED})
    return K3sProvider(config, mesh, host=recorder), recorder


def _plan(provider: K3sProvider, subnet: str) -> PlanContext:
    return PlanContext(provider.topology, "1.28.0", MeshCA.create(provider.run_dir / "plan-ca"),  # type: ignore[operator]
                       probe_source().read_text(), subnet=subnet, subnet_known=True)


def _printed(argv: tuple[str, ...]) -> dict[str, Any]:
    """The parts of a printed ``docker run`` a create request must match."""
    options: dict[str, list[str]] = {}
    rest = list(argv[2:])
    while rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag in ("-d", "--privileged"):
            options.setdefault(flag, []).append("")
        else:
            options.setdefault(flag, []).append(rest.pop(0))
    return {"options": options, "image": rest[0], "args": rest[1:]}


def _session_id() -> str:
    from testcontainers.core.labels import SESSION_ID

    return SESSION_ID


def test_up_creates_what_the_plan_prints_and_down_removes_it(engine: Engine, fake_istioctl: Path) -> None:
    provider, recorder = _provider(fake_istioctl)
    said: list[str] = []
    provider.up(owner_pid=1, progress=said.append)
    run = provider.run_dir
    assert run is not None and RunState(run).read()["ready"] is True
    session = {"org.testcontainers.session-id": _session_id()}

    # Ryuk first, told to reap this session; then the network, with a /24 and both labels
    ryuk = [i for i, c in enumerate(engine.calls) if c.path == "/containers/create" and "ryuk" in c.body["Image"]]
    network = [i for i, c in enumerate(engine.calls) if c.path == "/networks/create"]
    assert len(ryuk) == 1 and len(network) == 1 and ryuk[0] < network[0]
    assert engine.reaper_lines == [f"label=org.testcontainers.session-id={_session_id()}"]
    created_network = engine.calls[network[0]].body
    assert created_network["Name"] == NETWORK and created_network["Driver"] == "bridge"
    assert [{k: v for k, v in pool.items() if v is not None} for pool in created_network["IPAM"]["Config"]] == [
        {"Subnet": "172.30.0.0/24", "Gateway": "172.30.0.1"}]
    assert created_network["Labels"].items() >= {**session, "io.meshconf.run": run.name}.items()

    # every node is created as the plan prints it, with the run's token in place of ${K3S_TOKEN}
    ctx = _plan(provider, "172.30.0.0/24")
    nodes = ctx.all_nodes()
    created = {c["name"]: c for c in engine.created(K3S)}
    assert sorted(created) == ["meshconf-cluster1", "meshconf-cluster2"]
    tokens = set()
    for node in nodes:
        body, printed = created[node.name], _printed(node.docker_run(NETWORK, f"{run}/images", run.name))
        env = dict(item.split("=", 1) for item in body["Env"])
        tokens.add(env.pop("K3S_TOKEN"))
        assert env == {k: v for k, v in (e.split("=", 1) for e in printed["options"]["-e"]) if k != "K3S_TOKEN"}
        assert body["Image"] == printed["image"] and body["Cmd"] == printed["args"] == list(node.args)
        assert body["Hostname"] == node.name == printed["options"]["--hostname"][0]
        host = body["HostConfig"]
        assert host["Privileged"] is True and host["Tmpfs"] == {"/run": "", "/var/run": ""}
        assert sorted(host["Binds"]) == sorted(printed["options"]["-v"])
        assert not host.get("PortBindings")  # nothing published: the host reaches nodes at their addresses
        endpoint = body["NetworkingConfig"]["EndpointsConfig"][NETWORK]
        assert endpoint["IPAMConfig"]["IPv4Address"] == node.address == printed["options"]["--ip"][0]
        labels = dict(label.split("=", 1) for label in printed["options"]["--label"])
        assert body["Labels"].items() >= {**labels, **session}.items()
    assert len(tokens) == 1 and re.fullmatch(r"[0-9a-f]{48}", token := tokens.pop())

    # images: pulled or built once on the host, saved where every node mounts them, imported in every node
    pulled = {f"{c.query['fromImage'][0]}:{c.query['tag'][0]}" for c in engine.calls if c.path == "/images/create"}
    assert pulled == {"docker.io/istio/pilot:1.28.0", "docker.io/istio/proxyv2:1.28.0", "python:3.12-alpine"}
    assert [c.query["t"][0] for c in engine.calls if c.path == "/build"] == [
        "meshconf/locust:2.47.0-hdrhistogram-0.10.8"]
    saved = sorted(p.name for p in (run / "images").iterdir())
    assert len(saved) == 4
    execs = engine.exec_commands()
    for node in nodes:
        imported = sorted(cmd[-1].rsplit("/", 1)[1] for name, cmd in execs
                          if name == node.name and cmd[:4] == ["k3s", "ctr", "images", "import"])
        assert imported == saved
    assert not [cmd for _, cmd in execs if cmd[:2] == ["ip", "route"]]  # two networks: no routes

    # the run's kubeconfig: one context per cluster at its server's address, 0600, the token nowhere
    kubeconfig = run / "kubeconfig"
    assert stat.S_IMODE(kubeconfig.stat().st_mode) == 0o600
    merged = yaml.safe_load(kubeconfig.read_text())
    assert {c["name"]: c["cluster"]["server"] for c in merged["clusters"]} == {
        "k3s-cluster1": "https://172.30.0.10:6443", "k3s-cluster2": "https://172.30.0.20:6443"}
    assert {c["name"] for c in merged["contexts"]} == {"k3s-cluster1", "k3s-cluster2"}
    assert "default" not in kubeconfig.read_text()
    for where in (kubeconfig.read_text(), (run / "state.json").read_text(), "\n".join(said)):
        assert token not in where

    # host commands: the kube layer's Istio install, after the nodes are Ready
    rendered = recorder.rendered()
    assert rendered[0].endswith("--context k3s-cluster1 wait --for=condition=Ready node --all --timeout=180s")
    assert any("create-remote-secret --name=cluster2 --server=https://172.30.0.20:6443" in c for c in rendered)
    assert rendered[-1].endswith("-n meshconf-smoke rollout status deployment/smoke-v1 --timeout=180s")

    names = {cid: c["Name"].lstrip("/") for cid, c in engine.containers.items()}
    provider.down()
    deleted = [c.path for c in engine.calls if c.method == "DELETE"]
    assert {names[path.split("/")[-1]] for path in deleted if path.startswith("/containers/")} == {
        "meshconf-cluster1", "meshconf-cluster2"}
    assert any(path.startswith("/networks/") for path in deleted)
    assert not engine.networks and {c["Name"] for c in engine.containers.values()} == {
        f"/testcontainers-ryuk-{_session_id()}"}
    assert not run.exists()


def test_a_kept_mesh_turns_ryuk_off_and_meshconf_down_removes_it(engine: Engine, fake_istioctl: Path) -> None:
    provider, _ = _provider(fake_istioctl)
    provider.up(owner_pid=None)  # meshconf up / --keep: the mesh outlives this process
    run = provider.run_dir
    assert run is not None
    assert not [c for c in engine.created() if "ryuk" in c["Image"]] and engine.reaper_lines == []
    assert RunState(run).read()["reaped"] is False
    assert run in K3sProvider.leftovers()
    assert K3sProvider.cleanup(run) == []  # what `meshconf down` does, from another process's point of view
    assert not engine.containers and not engine.networks and not run.exists()


def test_a_node_that_fails_to_start_is_one_line_and_nothing_is_left(engine: Engine, fake_istioctl: Path) -> None:
    engine.fail_start = {"meshconf-cluster2"}
    provider, recorder = _provider(fake_istioctl)
    with pytest.raises(ProviderError) as failed:
        provider.up(owner_pid=1)
    message = str(failed.value)
    assert message.startswith("k3s node meshconf-cluster2 did not start: ") and "\n" not in message
    assert "cgroup mountpoint does not exist" in message
    assert not [c for c in engine.containers.values() if "ryuk" not in c["Config"]["Image"]]
    assert not engine.networks
    assert provider.run_dir is not None and not provider.run_dir.exists()
    assert recorder.calls == []  # no host command ran before the clusters existed


def test_an_import_that_fails_names_the_command(engine: Engine, fake_istioctl: Path) -> None:
    def answer(name: str, cmd: list[str]) -> tuple[int, bytes]:
        from .conftest import answer as normal

        if cmd[:3] == ["k3s", "ctr", "images"] and name == "meshconf-cluster2":
            return 1, b"ctr: failed to import: unexpected EOF\n"
        return normal(name, cmd)

    engine.exec_answer = answer
    provider, _ = _provider(fake_istioctl)
    with pytest.raises(ProviderError, match=r"`docker exec meshconf-cluster2 k3s ctr images import /meshconf-images/"
                                            r".*` failed after 1 attempt\(s\): ctr: failed to import: unexpected EOF"):
        provider.up(owner_pid=1)
    assert not engine.networks


def test_nodes_another_run_left_are_refused_before_anything_is_created(engine: Engine, fake_istioctl: Path) -> None:
    engine.containers["x"] = {"Id": "x", "Name": "/meshconf-cluster1", "State": {"Status": "running"},
                              "Config": {"Image": K3S, "Labels": {}, "Tty": False}, "HostConfig": {},
                              "NetworkSettings": {"Ports": {}, "Networks": {}}}
    provider, _ = _provider(fake_istioctl)
    with pytest.raises(UsageError, match="k3s nodes meshconf-cluster1 already exist"):
        provider.up(owner_pid=1)
    assert provider.run_dir is None
    assert not [c for c in engine.calls if c.method == "POST" and c.path in ("/networks/create", "/images/create")]


def test_docker_desktop_is_refused(engine: Engine, fake_istioctl: Path) -> None:
    engine.operating_system = "Docker Desktop"
    provider, _ = _provider(fake_istioctl)
    with pytest.raises(EnvironmentBroken, match="the k3s provider cannot run here: Docker Desktop"):
        provider.up(owner_pid=1)
    assert not [c for c in engine.calls if c.method in ("POST", "DELETE")]


def test_the_network_goes_where_no_docker_network_is(engine: Engine, fake_istioctl: Path) -> None:
    engine.networks["other"] = {"Id": "other", "Name": "someone-elses", "Driver": "bridge", "Labels": {},
                                "IPAM": {"Config": [{"Subnet": "172.30.0.0/16"}]}}
    provider, recorder = _provider(fake_istioctl, "primary-remote")
    provider.up(owner_pid=1)
    assert provider.run_dir is not None
    addresses = {c["name"]: c["NetworkingConfig"]["EndpointsConfig"][NETWORK]["IPAMConfig"]["IPv4Address"]
                 for c in engine.created(K3S)}
    assert addresses == {"meshconf-cluster1": "172.29.0.10", "meshconf-cluster2": "172.29.0.20"}
    remote = yaml.safe_load((provider.run_dir / "cluster2" / "istio.yaml").read_text())
    assert remote["spec"]["values"]["global"]["remotePilotAddress"] == "172.29.0.10"
    assert any("--server=https://172.29.0.20:6443" in c for c in recorder.rendered())
    # one network: every node routes the other cluster's pod and service subnets through its server
    routes = sorted((name, " ".join(cmd)) for name, cmd in engine.exec_commands() if cmd[:2] == ["ip", "route"])
    assert routes == [("meshconf-cluster1", "ip route add 10.20.0.0/16 via 172.29.0.20"),
                      ("meshconf-cluster1", "ip route add 10.255.20.0/24 via 172.29.0.20"),
                      ("meshconf-cluster2", "ip route add 10.10.0.0/16 via 172.29.0.10"),
                      ("meshconf-cluster2", "ip route add 10.255.10.0/24 via 172.29.0.10")]
    provider.down()
    assert list(engine.networks) == ["other"]  # someone else's network is never touched


def test_an_agent_joins_its_server_with_the_runs_token(engine: Engine, fake_istioctl: Path) -> None:
    provider, _ = _provider(fake_istioctl, "two-zones")
    provider.up(owner_pid=1)
    created = {c["name"]: c for c in engine.created(K3S)}
    assert sorted(created) == ["meshconf-east", "meshconf-east-agent1", "meshconf-west"]
    server_env = dict(e.split("=", 1) for e in created["meshconf-east"]["Env"])
    agent = created["meshconf-east-agent1"]
    agent_env = dict(e.split("=", 1) for e in agent["Env"])
    assert agent_env == {"K3S_URL": "https://172.30.0.10:6443", "K3S_TOKEN": server_env["K3S_TOKEN"]}
    assert "K3S_URL" not in server_env  # a server joins nobody
    assert agent["Cmd"][0] == "agent" and agent["HostConfig"]["Privileged"] is True
    assert "/sys/fs/cgroup:/sys/fs/cgroup:rw" in agent["HostConfig"]["Binds"]
    # the agent waits for nothing in the engine's logs: only servers are asked for k3s's readiness line
    logs = {c.path.split("/")[2] for c in engine.calls if c.path.endswith("/logs")}
    agent_id = next(cid for cid, c in engine.containers.items() if c["Name"] == "/meshconf-east-agent1")
    assert agent_id not in logs
    provider.down()


def test_diagnostics_write_each_nodes_log_and_no_kubeconfig(engine: Engine, fake_istioctl: Path,
                                                            tmp_path: Path) -> None:
    provider, _ = _provider(fake_istioctl)
    provider.up(owner_pid=1)
    files = provider.diagnostics(tmp_path / "diag", [])
    names = sorted(str(p.relative_to(tmp_path / "diag")) for p in files)
    assert names == ["cluster1/remote-clusters.txt", "cluster2/remote-clusters.txt", "k3s-nodes/meshconf-cluster1.log",
                     "k3s-nodes/meshconf-cluster2.log"]
    assert "Node controller sync successful" in (tmp_path / "diag/k3s-nodes/meshconf-cluster1.log").read_text()
    assert not any("KEY-MATERIAL" in p.read_text() for p in files)
    provider.down()
