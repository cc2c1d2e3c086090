import pytest

from conformance.errors import ManifestError
from conformance.istio import validate_document


def _pa(spec: object, api: str = "security.istio.io/v1") -> dict[str, object]:
    return {"apiVersion": api, "kind": "PeerAuthentication", "metadata": {"name": "p", "namespace": "n"}, "spec": spec}


def test_valid_documents_pass() -> None:
    validate_document(_pa({"mtls": {"mode": "STRICT"}}))
    validate_document(_pa({"selector": {"matchLabels": {"app": "a"}}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}))
    validate_document({"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
                       "metadata": {"name": "d"}, "spec": {"host": "a", "trafficPolicy": {"tls": {"mode": "DISABLE"}}}})


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (_pa({"mtls": {"mode": "STRICTER"}}), r"spec.mtls.mode.*not one of"),
        (_pa({"mtls": {"mdoe": "STRICT"}}), r"unknown field 'spec.mtls.mdoe'"),
        (_pa({"mtls": {"mode": "STRICT"}}, api="security.istio.io/v1alpha1"), "does not serve"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}, "not an Istio resource"),
        ({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication", "metadata": {}}, "metadata.name"),
    ],
)
def test_invalid_documents_name_the_problem(doc: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        validate_document(doc)
