import re

from conformance import Area, Scenario, check
from conformance.expect import expect_all_ok, expect_counted
from conformance.probe import CallResult
from conformance.provider import ProbeHandle

# Envoy's RBAC filter counts shadow-rule verdicts as http.<prefix>.rbac.<shadow_rules_stat_prefix>shadow_denied;
# Istio sets the prefix istio_dry_run_deny_ (authz/model RBACShadowRulesDenyStatPrefix) and its bootstrap keeps
# stats ending in shadow_denied. Envoy 1.40 adds a "." after the prefix; both spellings are read.
SHADOW_DENIED = re.compile(r"rbac\.istio_dry_run_deny_\.?shadow_denied: (\d+)")
CALLS = 10


def shadow_denied(scenario: Scenario, server: ProbeHandle) -> int:
    return sum(int(n) for n in SHADOW_DENIED.findall(scenario.admin(server, "/stats?filter=istio_dry_run_deny_")))


@check("authz-dry-run-does-not-enforce", area=Area.AUTHZ,
       description="A dry-run DENY policy blocks nothing, and its shadow-denied stat counts the calls it would deny")
def test_authz_dry_run_does_not_enforce(scenario: Scenario) -> None:
    server = scenario.deploy("server", "cluster1")
    client = scenario.deploy("client", "cluster1")
    scenario.baseline("the server answers before any policy",
                      lambda: scenario.call(client, server, count=3, path="/admin/users"), expect_all_ok)

    scenario.apply("authz-dry-run-does-not-enforce.yaml")

    def one_would_be_denied() -> tuple[CallResult, int]:
        before = shadow_denied(scenario, server)
        result = scenario.call(client, server, count=1, path="/admin/users", attach=False)
        return result, shadow_denied(scenario, server) - before

    def evaluated_not_enforced(found: tuple[CallResult, int]) -> None:
        expect_all_ok(found[0])
        expect_counted("the dry-run policy's shadow_denied stat for one /admin call", found[1], 1)

    # in force once the server's sidecar evaluates it: one call it would deny is counted, and answered
    scenario.await_convergence(one_would_be_denied, evaluated_not_enforced)
    before = shadow_denied(scenario, server)
    expect_all_ok(scenario.call(client, server, count=CALLS, path="/admin/users"))
    expect_all_ok(scenario.call(client, server, count=CALLS, path="/public"))
    counted = shadow_denied(scenario, server) - before
    scenario.measure("shadow-denied calls", counted, "calls")
    expect_counted(f"shadow_denied after {CALLS} /admin calls and {CALLS} others", counted, CALLS)
