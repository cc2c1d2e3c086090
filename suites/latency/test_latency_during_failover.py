import time

from conformance import Area, Feature, Scenario, check
from conformance.expect import expect_answered_by, expect_error_rate_within, expect_latency_within
from conformance.scenario import RunningLoad


@check("latency-during-failover", area=Area.LATENCY, serial=True,
       features=[Feature.MULTI_CLUSTER, Feature.WORKLOAD_FAULTS],
       description="While the local backend fails under load, p95 and the error rate stay within their budgets")
def test_latency_during_failover(scenario: Scenario) -> None:
    local = scenario.deploy("server", "cluster1")
    scenario.deploy("server", "cluster2")
    client = scenario.deploy("client", "cluster1")

    scenario.apply("latency-during-failover.yaml")
    scenario.baseline("local calls stay in cluster1", lambda: scenario.call(client, local, count=10),
                      lambda result: expect_answered_by(result, ["cluster1"]))

    def fail_the_local_backend(run: RunningLoad) -> None:
        run.window_opened_at()  # the measured window is open: let a third of it pass, then fail the backend
        time.sleep(scenario.config.load.duration_s / 3)
        run.mark("local backend fails")
        scenario.faults.set_mode(local, status=503)

    # the load comes from the client workload itself (its probe, paced), so it runs on every provider
    budgets = scenario.config.budgets
    result = scenario.load(scenario.from_workload(client, local), during=fail_the_local_backend,
                           users=scenario.config.load.users_for(budgets.cross_cluster_p99_ms))

    # p95, not p99: the calls caught in the shift pay new connections across the link on any mesh (see
    # Budgets.failover_p95_ms); Istio's default retries do not retry a 503 (retry.go DefaultPolicy lists no
    # retriable status codes), so the errors are the calls before outlier detection ejects the backend
    scenario.measure("p95 during failover", result.percentile_ms("p95"), "ms", budgets.failover_p95_ms)
    scenario.measure("p99 during failover", result.percentile_ms("p99"), "ms")
    scenario.measure("error rate during failover", result.error_rate_pct, "%", budgets.failover_error_rate_pct)
    expect_latency_within(result, "p95", budgets.failover_p95_ms)
    expect_error_rate_within(result, budgets.failover_error_rate_pct)
