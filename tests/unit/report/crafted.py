"""A small out/ directory written by hand: Allure results as allure-pytest writes them, and the run's report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN = {"provider": "local", "topology": "multi-network", "implementation": "meshconf-local (reference, real Envoy)",
       "meshVersion": "meshconf-local 0.1", "proxyVersion": "envoy 1.40.0", "started": "2026-01-02T03:04:05+00:00",
       "runId": "20260102T030405Z"}

# (test function, check id, area, status, message)
RESULTS = [
    ("test_strict_rejects_plaintext", "mtls-strict-rejects-plaintext", "mtls", "passed", None),
    ("test_on_endpoint_failure", "failover-on-endpoint-failure", "failover", "failed",
     "AssertionError: 12 of 20 calls from cluster1 failed after the local pod answered 503"),
    ("test_allow_principal", "authz-allow-principal", "authz", "broken",
     "ProviderError: probe client in cluster2 did not become ready"),
]


def write_out(out: Path) -> Path:
    """Write out/allure-results (one passed, one failed, one broken check) and conformance-report.json."""
    results = out / "allure-results"
    results.mkdir(parents=True)
    for n, (function, check_id, area, status, message) in enumerate(RESULTS):
        uuid = f"00000000-0000-4000-8000-{n:012d}"
        result: dict[str, Any] = {
            "name": function, "status": status, "uuid": uuid, "historyId": f"history-{check_id}",
            "testCaseId": f"case-{check_id}", "fullName": f"suites.{area}.test_{area}#{function}",
            "start": 1767323045000 + n * 1000, "stop": 1767323045500 + n * 1000,
            "labels": [{"name": "epic", "value": area}, {"name": "feature", "value": check_id},
                       {"name": "story", "value": f"what {check_id} proves"}, {"name": "severity", "value": "critical"},
                       {"name": "tag", "value": "provider:local"}],
        }
        if message:
            result["statusDetails"] = {"message": message, "trace": message}
        (results / f"{uuid}-result.json").write_text(json.dumps(result))
    (results / "environment.properties").write_text("provider=local\ntopology=multi-network\n")
    checks = [{"id": check_id, "area": area, "description": "", "status": status, "severity": "critical",
               "durationSeconds": 0.5, "nodeid": function, "measurements": [], "message": message}
              for function, check_id, area, status, message in RESULTS]
    (out / "conformance-report.json").write_text(json.dumps({"schemaVersion": 1, "run": RUN, "summary": {},
                                                             "checks": checks}))
    return out


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its content, to prove a render touched nothing but allure-report/."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and "allure-report" not in p.relative_to(directory).parts}
