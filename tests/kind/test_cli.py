"""meshconf plan / doctor / gate / upgrade --plan, as a user runs them (subprocess, no Docker)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conformance.providers import build_config
from conformance.providers.existing.settings import ExistingSettings
from tests.conftest import REPO, run_meshconf


def test_plan_multi_network_prints_every_step_and_runs_nothing() -> None:
    done = run_meshconf("plan", "--provider", "kind", "--topology", "multi-network", "--istio-version", "1.28.0")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    bring_up, _, faults = text.partition("\nFaults the lifecycle checks run once the mesh is up")
    steps = [line for line in bring_up.splitlines() if line.startswith("Step ")]
    assert [s.split(".")[0] for s in steps] == [f"Step {n}" for n in range(1, 16)]
    assert [s.split(".")[0] for s in faults.splitlines() if s.startswith("Step ")] == \
        [f"Step {n}" for n in range(16, 26)]
    assert "cross-network-gateway" in text and "AUTO_PASSTHROUGH" in text
    assert "PRIVATE KEY" not in text and "<redacted:" in text


def test_plan_three_cluster_prints_the_bring_up_and_the_fault_commands() -> None:
    """Issue 12, "Done when": the three-cluster bring-up (cluster2 a remote of cluster1, cluster3 on network2) and
    every control-plane and trust fault, with the exact commands."""
    done = run_meshconf("plan", "--provider", "kind", "--topology", "three-cluster", "--istio-version", "1.28.0")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    kubectl = "kubectl --kubeconfig $RUN/kubeconfig --context"
    for line in (
        "clusters: cluster1 (primary, network1, region1/zone1), cluster2 (remote, network1, region2/zone2), "
        "cluster3 (primary, network2, region3/zone3)",
        "$ istioctl create-remote-secret --name=cluster2 --server=https://${CLUSTER2_CONTROL_PLANE_IP}:6443 "
        f"--kubeconfig $RUN/kubeconfig --context kind-cluster2 | {kubectl} kind-cluster3 apply -f -",
        f"$ {kubectl} kind-cluster1 -n istio-system rollout restart deployment/istiod",
        f"$ {kubectl} kind-cluster1 -n istio-system scale deployment/istiod --replicas=0",
        f"$ {kubectl} kind-cluster1 -n istio-system scale deployment/istiod --replicas=1",
        "$ istioctl remote-clusters --kubeconfig $RUN/kubeconfig --context kind-cluster1    # polled up to 60 times; "
        "until it lists cluster1, cluster2, cluster3 as synced",
        "--secret-name=istio-reader-service-account-meshconf-cluster1-1 "
        "--server=https://${CLUSTER3_CONTROL_PLANE_IP}:6443",
        "--server=https://255.255.255.255:6443",
        "write $RUN/faults/root-new-intermediates/cluster3/cacerts.yaml  (0600, key material)",
        f"$ {kubectl} kind-cluster3 -n istio-system rollout restart deployment/istiod",
        f"$ {kubectl} kind-cluster2 -n meshconf-smoke annotate pods --all "
        "meshconf.io/root-migration=old-root-removed --overwrite",
    ):
        assert line in text, line
    assert f"{kubectl} kind-cluster2 -n istio-system rollout restart" not in text  # a remote runs no istiod
    assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text


def _steps_of(text: str) -> dict[str, str]:
    """Each printed step's text, by its title line."""
    found: dict[str, str] = {}
    title = ""
    for line in text.splitlines():
        if line.startswith("Step "):
            title = line
            found[title] = ""
        elif title:
            found[title] += line + "\n"
    return found


@pytest.mark.parametrize("topology", ["multi-network", "multi-primary", "primary-remote"])
def test_plan_shows_what_the_issue_asks_for(topology: str) -> None:
    """Issue 11, "Done when": netem delay for the link RTT, image preloading with `kind load`, remote secrets
    with --server, `kind delete cluster ... --kubeconfig <run's own>`, a sync wait naming every cluster, and a
    verified / not verified footer under every step."""
    done = run_meshconf("plan", "--provider", "kind", "--topology", topology, "--istio-version", "1.28.0")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    for line in (
        "$ docker exec cluster1-control-plane tc qdisc add dev eth0 parent 1:4 handle 40: netem delay 12.5ms "
        "limit 10000",
        "$ docker exec cluster2-control-plane tc qdisc add dev eth0 parent 1:4 handle 40: netem delay 12.5ms "
        "limit 10000",
        "$ kind load docker-image quay.io/metallb/controller:v0.15.3 quay.io/metallb/speaker:v0.15.3 "
        "docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 python:3.12-alpine "
        "meshconf/locust:2.47.0-hdrhistogram-0.10.8 --name cluster2",
        "$ istioctl create-remote-secret --name=cluster2 --server=https://${CLUSTER2_CONTROL_PLANE_IP}:6443 "
        "--kubeconfig $RUN/kubeconfig --context kind-cluster2 | kubectl --kubeconfig $RUN/kubeconfig "
        "--context kind-cluster1 apply -f -",
        "$ kind delete cluster --name cluster1 --kubeconfig $RUN/kubeconfig",
        "$ kind delete cluster --name cluster2 --kubeconfig $RUN/kubeconfig",
        "$ istioctl remote-clusters --kubeconfig $RUN/kubeconfig --context kind-cluster1    # polled up to 36 "
        "times; until it lists cluster1, cluster2 as synced",
    ):
        assert line in text, line
    assert "before a retry: `kind delete cluster --name cluster1 --kubeconfig $RUN/kubeconfig`" in text
    for title, body in _steps_of(text).items():
        assert "\n  verified here: " in body and "\n  not verified here: " in body, title


def test_plan_with_an_image_hub_pulls_from_the_mirror() -> None:
    done = run_meshconf("plan", "--topology", "multi-network", "--istio-version", "1.28.0",
                        "--image-hub", "mirror.gcr.io")
    assert done.returncode == 0, done.stderr
    assert "$ docker pull mirror.gcr.io/istio/pilot:1.28.0" in done.stdout
    assert "$ docker pull mirror.gcr.io/library/python:3.12-alpine" in done.stdout
    assert "hub: mirror.gcr.io/istio" in done.stdout
    assert "image: mirror.gcr.io/library/python:3.12-alpine" in done.stdout
    bad = run_meshconf("plan", "--istio-version", "1.28.0", "--image-hub", "https://mirror.gcr.io")
    assert bad.returncode == 2 and "--image-hub 'https://mirror.gcr.io' must be a registry host" in bad.stderr


def test_run_help_lists_the_new_flags() -> None:
    done = run_meshconf("run", "--help")
    assert done.returncode == 0
    assert "--revision REVISION" in done.stdout and "--image-hub HOST" in done.stdout


def test_revision_is_for_existing_clusters() -> None:
    from conformance.errors import UsageError

    with pytest.raises(UsageError, match="--revision is for --provider existing"):
        build_config(provider="kind", revision="1-28-0")
    with pytest.raises(UsageError, match="is not a revision name"):
        build_config(provider="existing", contexts=["a"], revision="1.28.0")
    assert build_config(provider="existing", contexts=["a"], revision="1-28-0").settings_as(
        ExistingSettings).revision == "1-28-0"


def test_plan_needs_an_istio_version() -> None:
    done = run_meshconf("plan", "--provider", "kind")
    assert done.returncode == 2 and "--istio-version" in done.stderr


def test_plan_for_a_provider_without_a_plan_is_a_usage_error() -> None:
    done = run_meshconf("plan", "--provider", "local")
    assert done.returncode == 2 and "has no install plan" in done.stderr
    done = run_meshconf("plan", "--provider", "local", "--istio-version", "1.28.0")
    assert done.returncode == 2 and "--istio-version is for --provider kind or k3s, not local" in done.stderr


def test_upgrade_plan() -> None:
    done = run_meshconf("upgrade", "--provider", "kind", "--topology", "multi-network", "--from", "1.27.3",
                        "--to", "1.28.0", "--plan")
    assert done.returncode == 0, done.stderr
    assert "istioctl-1.28.0 install -y -f $RUN/cluster1/istio-1-28-0.yaml" in done.stdout
    assert "istioctl-1.28.0 tag set default --revision=1-28-0 --overwrite -y" in done.stdout
    assert "revision: 1-28-0" in done.stdout
    steps = [line for line in done.stdout.splitlines() if line.startswith("Step ")]
    assert steps[14:] == ["Step 15. Pull Istio 1.28.0's images once and load them into every cluster",
                          "Step 16. Install Istio 1.28.0 beside 1.27.3 as revision 1-28-0  [clusters in parallel]",
                          "Step 17. Upgrade the east-west gateways in place to revision 1-28-0",
                          "Step 18. Point the default revision tag at 1-28-0",
                          "Step 19. Restart the probe workloads onto 1.28.0 under continuous traffic",
                          "Step 20. At the end (or `meshconf down RUN`): delete the clusters this run created"]
    assert ("from step 16 to step 19 8 keep-alive connections between workloads that are not restarted are held "
            "across clusters (lost connections allowed: 0, --budget upgrade_connection_resets)") in done.stdout
    assert "$ kind load docker-image docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 --name cluster2" \
        in done.stdout


def test_upgrade_refuses_remote_clusters() -> None:
    done = run_meshconf("upgrade", "--topology", "primary-remote", "--from", "1.27.3", "--to", "1.28.0", "--plan")
    assert done.returncode == 2 and "remote clusters" in done.stderr


_KC = "--kubeconfig $RUN/kubeconfig --context kind-"
KIND_CANARY_COMMANDS = [c.format(kc=_KC) for c in [
    # Step 15. Pull Istio 1.28.0's images once and load them into every cluster
    '$ docker pull docker.io/istio/pilot:1.28.0',
    '$ docker pull docker.io/istio/proxyv2:1.28.0',
    '$ kind load docker-image docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 --name cluster1',
    '$ kind load docker-image docker.io/istio/pilot:1.28.0 docker.io/istio/proxyv2:1.28.0 --name cluster2',
    # Step 16. Install Istio 1.28.0 beside 1.27.3 as revision 1-28-0  [clusters in parallel]
    '$ istioctl-1.28.0 install -y -f $RUN/cluster1/istio-1-28-0.yaml {kc}cluster1',
    '$ kubectl {kc}cluster1 -n istio-system rollout status deployment/istiod-1-28-0 --timeout=300s',
    '$ istioctl-1.28.0 install -y -f $RUN/cluster2/istio-1-28-0.yaml {kc}cluster2',
    '$ kubectl {kc}cluster2 -n istio-system rollout status deployment/istiod-1-28-0 --timeout=300s',
    # Step 17. Upgrade the east-west gateways in place to revision 1-28-0
    '$ istioctl-1.28.0 install -y -f $RUN/cluster1/eastwest-gateway-1-28-0.yaml {kc}cluster1',
    '$ kubectl {kc}cluster1 -n istio-system rollout status deployment/istio-eastwestgateway --timeout=300s',
    '$ istioctl-1.28.0 install -y -f $RUN/cluster2/eastwest-gateway-1-28-0.yaml {kc}cluster2',
    '$ kubectl {kc}cluster2 -n istio-system rollout status deployment/istio-eastwestgateway --timeout=300s',
    # Step 18. Point the default revision tag at 1-28-0
    '$ istioctl-1.28.0 tag set default --revision=1-28-0 --overwrite -y {kc}cluster1',
    '$ istioctl-1.28.0 tag set default --revision=1-28-0 --overwrite -y {kc}cluster2',
    # Step 19. Restart the probe workloads onto 1.28.0 under continuous traffic
    '$ kubectl {kc}cluster1 -n meshconf-smoke rollout restart deployment',
    '$ kubectl {kc}cluster1 -n meshconf-smoke rollout status deployment --timeout=300s',
    '$ kubectl {kc}cluster2 -n meshconf-smoke rollout restart deployment',
    '$ kubectl {kc}cluster2 -n meshconf-smoke rollout status deployment --timeout=300s',
    # Step 20. At the end (or `meshconf down RUN`): delete the clusters this run created
    '$ kind delete cluster --name cluster1 --kubeconfig $RUN/kubeconfig',
    '$ kind delete cluster --name cluster2 --kubeconfig $RUN/kubeconfig',
    '$ kind get clusters',
]]
"""The commands of steps 15-20 of `meshconf upgrade --provider kind --topology multi-network --plan --from 1.27.3
--to 1.28.0`, as the plan printed them before the gate became provider-neutral (issue 13): kind's upgrade is
unchanged in substance."""


def test_the_kind_upgrade_commands_are_unchanged() -> None:
    done = run_meshconf("upgrade", "--provider", "kind", "--topology", "multi-network", "--from", "1.27.3",
                        "--to", "1.28.0", "--plan")
    assert done.returncode == 0, done.stderr
    tail = done.stdout[done.stdout.index("Step 15. "):]
    commands = [line[2:].split("    # tried")[0] for line in tail.splitlines() if line.startswith("  $ ")]
    assert commands == KIND_CANARY_COMMANDS
    # then what the provider-neutral gate measures meanwhile (conformance/upgrade.py)
    assert tail.index("Step 20.") < tail.index("Measured by meshconf through the provider's upgrade steps")
    assert "meshconf restarts its own deployments in meshconf-upgrade-restart" in tail


# -- gate -----------------------------------------------------------------------------------------------------


def _report(path: Path, checks: list[dict[str, Any]], version: str) -> Path:
    path.write_text(json.dumps({"schemaVersion": 1, "run": {"provider": "kind", "topology": "multi-network",
                                                            "meshVersion": version}, "summary": {},
                                "checks": checks}))
    return path


def _check(check_id: str, status: str, value: float | None = None, budget: float = 10.0) -> dict[str, Any]:
    measurements = [] if value is None else [{"name": "p99", "value": value, "unit": "ms", "budget": budget,
                                              "comparison": "<=", "withinBudget": value <= budget}]
    return {"id": check_id, "area": "mtls", "status": status, "measurements": measurements}


@pytest.mark.parametrize(("after", "code", "shown"), [
    ([_check("a", "passed", 5.0), _check("b", "failed")], 0, "0 regression(s); 0 other change(s)"),
    ([_check("a", "failed", 5.0), _check("b", "failed")], 1, "a      status  passed  failed  REGRESSION"),
    ([_check("a", "passed", 12.0), _check("b", "failed")], 1, "p99     5 ms (budget <= 10)  12 ms (budget <= 10)"),
    ([_check("b", "passed")], 1, "absent  REGRESSION"),
    ([_check("a", "skipped", 5.0), _check("b", "passed")], 1, "passed  skipped  REGRESSION"),
])
def test_gate_exit_codes(tmp_path: Path, after: list[dict[str, Any]], code: int, shown: str) -> None:
    before = _report(tmp_path / "before.json", [_check("a", "passed", 5.0), _check("b", "failed")], "1.27.3")
    done = run_meshconf("gate", "--before", str(before), "--after", str(_report(tmp_path / "after.json", after,
                                                                                   "1.28.0")))
    assert done.returncode == code, done.stdout + done.stderr
    assert " ".join(shown.split()) in " ".join(done.stdout.split())


def test_gate_rejects_what_is_not_a_report(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schemaVersion": 2, "checks": []}')
    done = run_meshconf("gate", "--before", str(bad), "--after", str(bad))
    assert done.returncode == 2 and "schemaVersion 1" in done.stderr


# -- doctor ---------------------------------------------------------------------------------------------------


def _tool(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


def _doctor(path: str, provider: str = "kind") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": path}
    return subprocess.run([sys.executable, "-m", "conformance.cli", "doctor", "--provider", provider], cwd=REPO,
                          capture_output=True, text=True, timeout=120, env=env)


def test_doctor_with_everything_missing(tmp_path: Path) -> None:
    done = _doctor(str(tmp_path))
    assert done.returncode == 3
    for line in ("MISSING docker ", "MISSING docker daemon", "MISSING kind ", "MISSING kubectl "):
        assert line in done.stdout
    assert "helm" in done.stdout and "not needed" in done.stdout
    assert "NOT ready for --provider kind" in done.stdout


def test_doctor_with_a_stopped_docker_daemon(tmp_path: Path) -> None:
    _tool(tmp_path, "docker", 'if [ "$1" = "info" ]; then echo "Cannot connect" >&2; exit 1; fi\n'
                              'echo "Docker version 28.2.2, build test"')
    _tool(tmp_path, "kind", "echo kind v0.33.0 go1.25 linux/amd64")
    _tool(tmp_path, "kubectl", """echo '{"clientVersion": {"gitVersion": "v1.34.1"}}'""")
    done = _doctor(str(tmp_path))
    assert done.returncode == 3
    assert "ok      docker " in done.stdout and "Docker version 28.2.2" in done.stdout
    assert "MISSING docker daemon" in done.stdout and "docker info" in done.stdout
    assert "kind v0.33.0" in done.stdout and "v1.34.1" in done.stdout


def test_doctor_ready(tmp_path: Path) -> None:
    _tool(tmp_path, "docker", 'if [ "$1" = "info" ]; then echo 28.2.2; exit 0; fi\necho "Docker version 28.2.2"')
    _tool(tmp_path, "kind", "echo kind v0.33.0")
    _tool(tmp_path, "kubectl", """echo '{"clientVersion": {"gitVersion": "v1.34.1"}}'""")
    done = _doctor(str(tmp_path))
    for row in ("kind ", "kubectl ", "docker daemon", "container network"):
        assert f"ok      {row}" in done.stdout
    # this host's kernel and limits decide the last rows (unit tests cover both answers); the exit code follows
    for row in ("kernel tc (netem, prio, u32)", "inotify limits (kind)"):
        assert row in done.stdout
    host_missing = [line for line in done.stdout.splitlines() if line.startswith("  MISSING")]
    assert done.returncode == (3 if host_missing else 0), done.stdout
    assert ("NOT ready" in done.stdout) is bool(host_missing)
    assert _doctor(str(tmp_path / "empty"), provider="existing").returncode == 0  # the Python client is enough


# -- run flags and pytest options -----------------------------------------------------------------------------


def test_pytest_options_reach_the_run_config() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest", "suites/mtls", "--collect-only", "-q",
                           "--mesh-provider=existing", "--mesh-context=staging-a", "--mesh-context=staging-b",
                           "--mesh-allow-mesh-wide"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_existing_without_contexts_is_a_usage_error() -> None:
    done = run_meshconf("run", "--provider", "existing")
    assert done.returncode == 2 and "needs at least one --context" in done.stderr
