from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_all_ok, expect_error_rate_within, expect_overhead_within


@check("latency-mesh-overhead", area=Area.LATENCY, features=[Feature.SIDECAR_ENTRY], serial=True,
       description="Under paced load the mesh path adds at most the overhead budget to the direct path at p50 and p99")
def test_latency_mesh_overhead(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")

    scenario.apply("latency-mesh-overhead.yaml")
    scenario.baseline("the server answers", lambda: scenario.call(client, server, count=3), expect_all_ok)

    # the same Locust load, first straight to the server's app, then into the client's sidecar
    direct = scenario.load(scenario.direct(server))
    mesh = scenario.load(scenario.through_sidecar(client, server))
    scenario.attach_comparison("mesh path against direct path", direct, mesh)

    budgets = scenario.config.budgets
    for percentile in ("p50", "p99"):
        overhead_ms = mesh.percentile_ms(percentile) - direct.percentile_ms(percentile)
        scenario.measure(f"mesh overhead at {percentile}", overhead_ms, "ms", budgets.mesh_overhead_p99_ms)
    scenario.measure("error rate through the mesh", mesh.error_rate_pct, "%", budgets.error_rate_pct)
    expect_overhead_within(mesh, direct, "p50", budgets.mesh_overhead_p99_ms)
    expect_overhead_within(mesh, direct, "p99", budgets.mesh_overhead_p99_ms)
    expect_error_rate_within(mesh, budgets.error_rate_pct)
