"""MeshConfig ``serviceSettings[].settings.clusterLocal`` (tests/integration/pilot/multicluster_test.go
``TestClusterLocal``): a host listed as cluster-local is served to each proxy only by its own cluster
(pilot/pkg/xds/endpoints/endpoint_builder.go skips other clusters' endpoints; pilot/pkg/model/cluster_local.go
reads the setting), while every other service still reaches every cluster."""

from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_reached_clusters


@check("multicluster-cluster-local-service", area=Area.MULTICLUSTER, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.MESH_WIDE_CONFIG],
       description="A host MeshConfig serviceSettings marks clusterLocal is served only by the caller's own cluster, "
                   "while other services still reach every cluster")
def test_multicluster_cluster_local_service(scenario: Scenario) -> None:
    local, *_ = [scenario.deploy("local", cluster) for cluster in scenario.clusters]
    shared, *_ = [scenario.deploy("shared", cluster) for cluster in scenario.clusters]
    clients = {cluster: scenario.deploy("client", cluster) for cluster in scenario.clusters}
    for client in clients.values():
        scenario.baseline("without the setting, the service reaches every cluster",
                          lambda c=client: scenario.call(c, local, count=30),  # type: ignore[misc]
                          lambda result: expect_reached_clusters(result, scenario.clusters))

    scenario.mesh_config({"serviceSettings": [{"hosts": [local.host], "settings": {"clusterLocal": True}}]})
    for cluster, client in clients.items():  # the setting takes effect (a mesh where it never does fails here)
        scenario.await_convergence(lambda c=client: scenario.call(c, local, count=30),  # type: ignore[misc]
                                   lambda result, k=cluster: expect_answered_by(result, [k]))

    samples = {cluster: scenario.call(client, local, count=50) for cluster, client in clients.items()}
    others = {cluster: scenario.call(client, shared, count=30) for cluster, client in clients.items()}
    for cluster, sample in samples.items():
        away = sum(1 for r in sample.responses if r.cluster != cluster)
        scenario.measure(f"calls from {cluster} to the cluster-local host answered elsewhere", away, "calls", budget=0)
    for cluster, sample in samples.items():
        expect_answered_by(sample, [cluster])
    for other in others.values():
        expect_reached_clusters(other, scenario.clusters)
