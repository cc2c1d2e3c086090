"""The existing provider against fake API servers: preflight (cluster IDs, revisions, the path to pods, regions,
remote secrets), what it may touch and what it may never change, cleanup."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conformance.errors import CannotRun, EnvironmentBroken, ProviderError, UsageError
from conformance.provider import Feature, ProbeSpec
from conformance.providers import PROVIDERS, build_config
from conformance.providers.existing.preflight import istiod_version
from conformance.providers.existing.provider import RUN_ANNOTATION, ExistingProvider
from conformance.providers.kube.api import Pod
from conformance.runstate import RunState
from conformance.scenario import load_manifests
from conformance.topology import load_topology

REPO = Path(__file__).resolve().parents[2]


def _istiod(revision: str = "default", cluster_id: str | None = None, ready: int = 1,
            version: str = "1.28.0") -> Any:
    env = [SimpleNamespace(name="REVISION", value=revision)]
    if cluster_id is not None:
        env.append(SimpleNamespace(name="CLUSTER_ID", value=cluster_id))
    container = SimpleNamespace(name="discovery", image=f"docker.io/istio/pilot:{version}-distroless", env=env)
    name = "istiod" if revision == "default" else f"istiod-{revision}"
    return SimpleNamespace(metadata=SimpleNamespace(name=name, labels={"app": "istiod", "istio.io/rev": revision}),
                           spec=SimpleNamespace(template=SimpleNamespace(spec=SimpleNamespace(containers=[container]))),
                           status=SimpleNamespace(ready_replicas=ready))


class FakeAPI:
    """Answers like a cluster's API server: istiods (any revisions), remote secrets listed as metadata, node
    labels, the istio-system values ConfigMap, the pod proxy / port-forward to istiod, and live objects."""

    def __init__(self, context: str, istiods: tuple[Any, ...] = (), secrets: dict[str, str] | None = None,
                 region: str | None = "us-east1", proxy_works: bool = True, forward_works: bool = True,
                 secrets_forbidden: bool = False, values: dict[str, Any] | None = None) -> None:
        self.context = context
        self.istiods = istiods
        self.secrets = secrets or {}  # secret name -> networking.istio.io/cluster annotation
        self.region = region
        self.proxy_works, self.forward_works = proxy_works, forward_works
        self.secrets_forbidden = secrets_forbidden
        self.values = values
        self.transport = "proxy"
        self.deleted_namespaces: list[str] = []
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.applied: list[dict[str, Any]] = []
        self.deleted: list[dict[str, Any]] = []
        self.pod_calls: list[str] = []

    def server_version(self) -> str:
        return "v1.34.1"

    def list_objects(self, api_version: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        return [o for (k, ns, _), o in self.objects.items() if (k, ns) == (kind, namespace)]

    def deployments(self, namespace: str, selector: dict[str, str]) -> list[Any]:
        assert (namespace, selector) == ("istio-system", {"app": "istiod"})  # any revision
        return list(self.istiods)

    def pods(self, namespace: str, selector: dict[str, str]) -> list[Pod]:
        return [Pod("istiod-abc", "10.0.0.5", "node-1", True, dict(selector))] if self.istiods else []

    def pod_text(self, namespace: str, pod: str, port: int, path: str, transport: str,
                 timeout_s: float = 15.0) -> str:
        self.pod_calls.append(f"{transport} {pod}:{port}{path}")
        if (transport == "proxy" and not self.proxy_works) or (transport == "port-forward" and not self.forward_works):
            raise ProviderError(f"{self.context}: GET {path}: 503 error trying to reach service")
        return "1.28.0-abc-Clean"

    def secret_metadata(self, namespace: str, label_selector: str) -> list[tuple[str, dict[str, str]]] | None:
        assert (namespace, label_selector) == ("istio-system", "istio/multiCluster=true")
        if self.secrets_forbidden:
            return None
        return [(name, {"networking.istio.io/cluster": cluster}) for name, cluster in self.secrets.items()]

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        if self.values is None or name != "values":
            return None
        return {"merged-values": json.dumps(self.values)}

    def node_labels(self) -> list[dict[str, str]] | None:
        return [{"topology.kubernetes.io/region": self.region}] if self.region else [{}]

    def delete_namespace(self, namespace: str, timeout_s: float) -> None:
        self.deleted_namespaces.append(namespace)

    def read_object(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        return self.objects.get(_key(doc))

    def apply(self, docs: Any) -> None:
        for doc in docs:
            self.applied.append(doc)
            self.objects[_key(doc)] = doc

    def delete(self, docs: Any) -> None:
        for doc in docs:
            self.deleted.append(doc)
            self.objects.pop(_key(doc), None)


def _key(doc: dict[str, Any]) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return str(doc["kind"]), str(meta.get("namespace") or ""), str(meta["name"])


def _provider(apis: dict[str, FakeAPI], topology: str = "multi-primary", **flags: Any) -> ExistingProvider:
    config = build_config(provider="existing", topology=topology, contexts=list(apis), **flags)
    return ExistingProvider(config, load_topology(topology), api_factory=lambda context: apis[context])  # type: ignore[arg-type,return-value]


def _healthy(**b: Any) -> dict[str, FakeAPI]:
    """Two primaries whose istiods call themselves east-1 and west-1 (not the topology's cluster1/cluster2)."""
    return {"staging-a": FakeAPI("staging-a", (_istiod(cluster_id="east-1"),),
                                 {"istio-remote-secret-west-1": "west-1"}, region="us-east1"),
            "staging-b": FakeAPI("staging-b", (_istiod(cluster_id="west-1"),),
                                 {"istio-remote-secret-east-1": "east-1"}, region="us-west1", **b)}


def test_registered() -> None:
    assert PROVIDERS["existing"].provider == "conformance.providers.existing.provider:ExistingProvider"


def test_preflight_reports_ids_revisions_regions_and_cleans_up_its_namespaces() -> None:
    apis = _healthy()
    provider = _provider(apis)
    lines: list[str] = []
    provider.up(progress=lines.append)
    assert lines[0] == ("existing: cluster1 = context staging-a, Kubernetes v1.34.1, Istio 1.28.0 (revision default); "
                        "cluster ID east-1; region us-east1; pods reached through the API server pod proxy")
    assert provider.describe().mesh_version == "1.28.0"
    assert provider.describe().details["clusterIDs"] == "cluster1=east-1,cluster2=west-1"
    assert provider.run_dir is not None
    RunState(provider.run_dir).update(namespaces=["meshconf-check-abc123"])
    provider.down()
    assert apis["staging-a"].deleted_namespaces == ["meshconf-check-abc123"] == apis["staging-b"].deleted_namespaces


@pytest.mark.parametrize(("broken", "message"), [
    (FakeAPI("staging-b"), "context staging-b: Istio is not installed"),
    (FakeAPI("staging-b", (_istiod(cluster_id="west-1", ready=0),), {"istio-remote-secret-east-1": "east-1"}),
     "context staging-b: istiod is not ready"),
    # item 7: the secret is looked up by the real cluster ID, and the fix names it, never the topology's name
    (FakeAPI("staging-b", (_istiod(cluster_id="west-1"),), {"istio-remote-secret-cluster1": "cluster1"}),
     "context staging-b: istiod has no remote secret for cluster ID east-1 (context staging-a); run "
     "`istioctl create-remote-secret --context=staging-a --name=east-1 | kubectl apply --context=staging-b -f -`"),
    (FakeAPI("staging-b", (_istiod(cluster_id="east-1"),), {"istio-remote-secret-east-1": "east-1"}),
     "contexts staging-a and staging-b both have cluster ID east-1"),
    (FakeAPI("staging-b", (_istiod("1-27-3", "west-1"), _istiod("1-28-0", "west-1")), {}),
     "context staging-b: several istiod revisions (1-27-3, 1-28-0) and none is default; pass --revision"),
])
def test_preflight_failures_are_one_line_with_a_fix(broken: FakeAPI, message: str) -> None:
    apis = _healthy()
    apis["staging-b"] = broken
    with pytest.raises((EnvironmentBroken, UsageError)) as raised:
        _provider(apis).up()
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_a_secret_matches_on_its_cluster_annotation_whatever_its_name() -> None:
    apis = _healthy()
    apis["staging-b"].secrets = {"prod-east": "east-1"}  # made by other tooling, annotated by istioctl's convention
    _provider(apis).up()


def test_revisioned_installs_label_namespaces_with_istio_io_rev() -> None:
    """Item 8: istiod found by app=istiod whatever its revision; --revision picks one; probes' namespaces get
    istio.io/rev (not istio-injection); the report names the revision."""
    apis = _healthy()
    apis["staging-a"].istiods = (_istiod("1-27-3", "east-1"), _istiod("1-28-0", "east-1", version="1.28.0"))
    apis["staging-b"].istiods = (_istiod("1-28-0", "west-1"),)
    with pytest.raises(UsageError, match="several istiod revisions \\(1-27-3, 1-28-0\\) and none is default; pass "
                                         "--revision"):
        _provider(apis).up()
    with pytest.raises(UsageError, match=r"^context staging-a: no istiod of revision 1-29-0 \(found: 1-27-3, 1-28-0\); "
                                         "pass one of those to --revision$"):
        _provider(apis, revision="1-29-0").up()
    provider = _provider(apis, revision="1-28-0")
    lines: list[str] = []
    provider.up(progress=lines.append)
    assert "Istio 1.28.0 (revision 1-28-0)" in lines[0] and provider.describe().details["revision"] == "1-28-0"
    applied: list[Any] = []
    provider.api("cluster1").apply = applied.extend  # type: ignore[method-assign]
    provider.api("cluster1").wait_rollout = lambda *a: [Pod("p", "10.0.0.9", "n", True, {})]  # type: ignore[attr-defined]
    provider.deploy_probe(ProbeSpec(service="server", namespace="meshconf-x", cluster="cluster1"))
    labels = applied[0]["metadata"]["labels"]
    assert labels["istio.io/rev"] == "1-28-0" and "istio-injection" not in labels
    # a worker process attached to the run labels the same way
    assert provider.run_dir is not None
    attached = ExistingProvider.attach(provider.config, load_topology("multi-primary"), provider.run_dir)
    assert attached.revision_for("cluster2") == "1-28-0"
    # one istiod of a single, non-default revision is used without asking
    single = _healthy()
    single["staging-a"].istiods = (_istiod("1-28-0", "east-1"),)
    one = _provider(single)
    one.up()
    assert one.revision_for("cluster1") == "1-28-0" and one.revision_for("cluster2") is None


def test_a_blocked_pod_proxy_falls_back_to_port_forward_and_says_so() -> None:
    """Item 9: one proxy call at preflight; when the API server cannot reach pods, port-forward is used."""
    apis = _healthy(proxy_works=False)
    provider = _provider(apis)
    lines: list[str] = []
    provider.up(progress=lines.append)
    assert apis["staging-b"].pod_calls == ["proxy istiod-abc:15014/version", "port-forward istiod-abc:15014/version"]
    assert lines[1].endswith("pods reached through port-forward; the API server's pod proxy failed, so port-forward "
                             "(through the kubelet) is used")
    assert provider.api("cluster2").transport == "port-forward" and provider.api("cluster1").transport == "proxy"
    assert provider.run_dir is not None
    attached = ExistingProvider(provider.config, load_topology("multi-primary"), provider.run_dir,
                                api_factory=lambda context: _healthy()[context])  # type: ignore[arg-type,return-value]
    assert attached.api("cluster2").transport == "port-forward"  # workers use the path preflight chose
    broken = _healthy(proxy_works=False, forward_works=False)
    with pytest.raises(EnvironmentBroken, match=r"context staging-b: cannot reach pods through the API server's pod "
                                                r"proxy .* nor through a port-forward"):
        _provider(broken).up()


def test_regions_come_from_the_nodes_and_template_the_locality_check() -> None:
    """Item 10: the clusters the provider reports carry their nodes' real regions, and the locality check's
    DestinationRule's subset of the far region is written from them."""
    provider = _provider(_healthy())
    provider.up()
    regions = {c.name: c.region for c in provider.clusters()}
    assert regions == {"cluster1": "us-east1", "cluster2": "us-west1"}
    docs = load_manifests(REPO / "suites/latency/latency-locality-saves-rtt.yaml",
                          {"namespace": "meshconf-x", "far_region": regions["cluster2"]})
    subsets = docs[0]["spec"]["subsets"]
    assert subsets == [{"name": "far", "labels": {"topology.kubernetes.io/region": "us-west1"}}]
    source = (REPO / "suites/latency/test_latency_locality_saves_rtt.py").read_text()
    assert 'far_region=regions["cluster2"]' in source  # the check passes the mesh's regions


def test_existing_clusters_never_offer_the_link_rtt() -> None:
    """The latency checks that need the topology's RTT skip here: nothing applies it to clusters we do not own."""
    provider = _provider(_healthy())
    provider.up()
    assert Feature.LINK_RTT not in provider.features() and Feature.LINK_FAULTS not in provider.features()


def test_only_meshconf_namespaces_unless_mesh_wide_is_allowed() -> None:
    policy = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    provider = _provider(_healthy())
    assert Feature.MESH_WIDE_CONFIG not in provider.features()
    with pytest.raises(UsageError, match="--allow-mesh-wide"):
        provider.apply([policy], ["cluster1"])
    with pytest.raises(UsageError, match="only uses its own namespaces"):
        provider.delete_namespace("default")
    allowed = _provider(_healthy(), allow_mesh_wide=True)
    allowed.up()
    assert Feature.MESH_WIDE_CONFIG in allowed.features()
    allowed.apply([policy], ["cluster1"])
    applied = allowed.api("cluster1").applied  # type: ignore[attr-defined]
    assert applied[0]["spec"] == policy["spec"]
    assert applied[0]["metadata"]["annotations"] == {RUN_ANNOTATION: allowed.run_id}


def test_mesh_wide_never_changes_or_deletes_what_this_run_did_not_create() -> None:
    """The verdicts issue: under --allow-mesh-wide, an object that exists and is not this run's is refused (one
    line); delete and teardown remove only objects marked as this run's."""
    theirs = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": "istio-system"},
              "spec": {"selector": {"matchLabels": {"app": "gateway"}}, "mtls": {"mode": "PERMISSIVE"}}}
    ours = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "meshconf-strict", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    apis = _healthy()
    apis["staging-a"].objects[_key(theirs)] = theirs
    provider = _provider(apis, allow_mesh_wide=True)
    provider.up()
    changed = {**theirs, "spec": {**theirs["spec"], "mtls": {"mode": "STRICT"}}}
    with pytest.raises(UsageError) as raised:
        provider.apply([changed], ["cluster1", "cluster2"])
    assert str(raised.value) == ("PeerAuthentication istio-system/default already exists in context staging-a and was "
                                 "not created by this meshconf run; meshconf never changes objects it did not create "
                                 "(remove it yourself, or skip this check with -k)")
    assert apis["staging-a"].applied == [] == apis["staging-b"].applied  # nothing was written anywhere
    provider.delete([theirs], ["cluster1"])
    assert apis["staging-a"].deleted == [] and apis["staging-a"].objects[_key(theirs)] is theirs
    # another run's object counts as not ours either
    apis["staging-b"].objects[_key(ours)] = {**ours, "metadata": {**ours["metadata"],
                                                                  "annotations": {RUN_ANNOTATION: "existing-other"}}}
    with pytest.raises(UsageError, match="already exists in context staging-b"):
        provider.apply([ours], ["cluster2"])
    del apis["staging-b"].objects[_key(ours)]
    provider.apply([ours], ["cluster1", "cluster2"])  # ours: applied, marked, and reapplied freely
    provider.apply([ours], ["cluster1"])
    provider.down()  # teardown deletes what this run created, in every cluster, and only that
    assert [d["metadata"]["name"] for d in apis["staging-a"].deleted] == ["meshconf-strict"]
    assert [d["metadata"]["name"] for d in apis["staging-b"].deleted] == ["meshconf-strict"]
    assert apis["staging-a"].objects[_key(theirs)] is theirs


def test_a_mesh_wide_policy_the_user_has_skips_the_check_instead_of_a_false_alarm() -> None:
    """Istio applies only the oldest mesh-wide PeerAuthentication (pilot/pkg/model/authentication.go): with the
    user's own in place, the check's could never take effect, so the check cannot run (skipped, saying why)
    rather than report a conformant mesh as failing. A policy with a selector does not shadow it."""
    users = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
             "metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    ours = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "meshconf-strict", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}}
    apis = _healthy()
    apis["staging-b"].objects[_key(users)] = users
    provider = _provider(apis, allow_mesh_wide=True)
    provider.up()
    with pytest.raises(CannotRun, match="context staging-b already has a mesh-wide PeerAuthentication "
                                        "istio-system/default; Istio applies only the oldest"):
        provider.apply([ours], ["cluster1", "cluster2"])
    assert apis["staging-a"].applied == [] == apis["staging-b"].applied
    apis["staging-b"].objects[_key(users)] = {**users, "spec": {"selector": {"matchLabels": {"app": "x"}}}}
    provider.apply([ours], ["cluster1", "cluster2"])
    provider.down()


def test_istiod_version_from_image() -> None:
    assert istiod_version("docker.io/istio/pilot:1.28.0-distroless") == "1.28.0"
    assert istiod_version("gcr.io/istio-release/pilot:1.27.3@sha256:abc") == "1.27.3"


def test_remote_clusters_are_matched_on_the_id_their_install_recorded() -> None:
    """primary-remote: the remote cluster has no istiod; its ID comes from the values ConfigMap its install wrote,
    and the primary's remote secret must carry that ID."""
    primary = FakeAPI("hub", (_istiod(cluster_id="hub-1"),), {"istio-remote-secret-edge-7": "edge-7"})
    remote = FakeAPI("edge", values={"global": {"multiCluster": {"clusterName": "edge-7"}}}, region="eu-west1")
    provider = _provider({"hub": primary, "edge": remote}, topology="primary-remote")
    lines: list[str] = []
    provider.up(progress=lines.append)
    assert lines[1].startswith("existing: cluster2 = context edge, Kubernetes v1.34.1, remote (no istiod); "
                               "cluster ID edge-7; region eu-west1")
    primary.secrets = {"istio-remote-secret-cluster2": "cluster2"}  # named after the topology, not the real ID
    with pytest.raises(EnvironmentBroken, match=r"no remote secret for cluster ID edge-7 .* --name=edge-7 "):
        _provider({"hub": primary, "edge": remote}, topology="primary-remote").up()
    unknown = FakeAPI("edge", values=None)  # no values ConfigMap: never guess an ID, say it was not checked
    lines.clear()
    _provider({"hub": primary, "edge": unknown}, topology="primary-remote").up(progress=lines.append)
    assert "cluster ID unknown" in lines[1] and "cluster ID not read" in lines[1]
    assert lines[0].endswith("remote secrets for cluster2 not checked (their cluster IDs are unknown)")


def test_remote_secrets_are_listed_only_when_rbac_allows() -> None:
    apis = _healthy()
    apis["staging-a"].secrets_forbidden = True
    lines: list[str] = []
    _provider(apis).up(progress=lines.append)
    assert lines[0].endswith("remote secrets not checked (this user may not list Secrets in istio-system)")
