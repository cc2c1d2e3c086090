import pytest

from conformance.errors import UnsupportedError
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
