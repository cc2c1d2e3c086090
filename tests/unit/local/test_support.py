import pytest

from conformance.errors import ManifestError, UnsupportedError
from conformance.providers.local.support import check_supported


def test_supported_document_passes() -> None:
    check_supported({"kind": "PeerAuthentication", "metadata": {"name": "a", "namespace": "n"},
                     "spec": {"selector": {"matchLabels": {"app": "x"}}, "mtls": {"mode": "STRICT"}}})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"kind": "EnvoyFilter", "metadata": {"name": "e", "namespace": "n"}, "spec": {}},
         "EnvoyFilter is supported by Istio, not by the local mesh"),
        ({"kind": "DestinationRule", "metadata": {"name": "d", "namespace": "n"},
          "spec": {"host": "a", "trafficPolicy": {"tls": {"mode": "SIMPLE"}}}},
         r"spec.trafficPolicy.tls.mode='SIMPLE' is supported by Istio, not by the local mesh"),
        ({"kind": "DestinationRule", "metadata": {"name": "d", "namespace": "n"},
          "spec": {"host": "a", "exportTo": ["."]}},
         r"field spec.exportTo is supported by Istio, not by the local mesh"),
    ],
)
def test_unsupported_fields_are_named(doc: dict[str, object], message: str) -> None:
    with pytest.raises(UnsupportedError, match=message):
        check_supported(doc)


def _rule(policy: dict[str, object]) -> dict[str, object]:
    return {"kind": "DestinationRule", "metadata": {"name": "d", "namespace": "n"},
            "spec": {"host": "a", "trafficPolicy": policy}}


def _locality(setting: dict[str, object]) -> dict[str, object]:
    return _rule({"loadBalancer": {"localityLbSetting": setting}, "outlierDetection": {}})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_rule({}), "traffic policy must have at least one field"),
        (_locality({"distribute": [{"from": "r1/*", "to": {"r1/*": 80, "r2/*": 30}}]}), "total locality weight 110"),
        (_locality({"distribute": [{"from": "r1/*", "to": {"r1/*": 100, "r2/*": 0}}]}),
         r"locality weight must be in range \[1, 100\]"),
        (_locality({"distribute": [{"from": "r1/*", "to": {"r1/*": 100}}], "failover": [{"from": "r1", "to": "r2"}]}),
         "can not simultaneously specify 'distribute' and 'failover'"),
        (_locality({"failover": [{"from": "r1", "to": "r2"}], "failoverPriority": ["topology.kubernetes.io/zone"]}),
         "can not simultaneously set 'failover' and topology label"),
        (_locality({"failover": [{"from": "r1", "to": "r1"}]}), "must specify different regions"),
        (_locality({"failover": [{"from": "r1/z1", "to": "r2"}]}), "only specify region"),
    ],
)
def test_destination_rules_istio_refuses_are_refused(doc: dict[str, object], message: str) -> None:
    """pkg/config/validation: validateTrafficPolicy and agent.ValidateLocalityLbSetting."""
    with pytest.raises(ManifestError, match=message):
        check_supported(doc)


def test_failover_priority_on_other_labels_combines_with_failover() -> None:
    check_supported(_locality({"failover": [{"from": "r1", "to": "r2"}], "failoverPriority": ["version"]}))
