"""ProbeClient: make a probe workload call a service N times and get typed responses back.

Every check sends traffic FROM a probe in a given cluster, through the probe's ``/forward`` (as Istio's echo
app does), so the caller's sidecar, identity and locality are real. The provider carries the request to the
probe's control port; this module builds the request and types the answer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conformance.errors import ProviderError
from conformance.tokens import redact

if TYPE_CHECKING:
    from conformance.provider import ProbeHandle, Provider

__all__ = ["CallResult", "ProbeClient", "Response", "probe_source"]


def probe_source() -> Path:
    """Path of ``probe.py``: the repository's ``workloads/probe/``, or the copy bundled in the wheel."""
    repo = Path(__file__).resolve().parent.parent / "workloads" / "probe" / "probe.py"
    if repo.is_file():
        return repo
    bundled = Path(str(resources.files("conformance") / "_bundled" / "probe.py"))
    if bundled.is_file():
        return bundled
    raise ProviderError("probe.py is missing: reinstall meshconf (it ships workloads/probe/probe.py)")


@dataclass(frozen=True)
class Response:
    """One call as the caller saw it, plus what the answering probe reported about itself."""

    status: int
    """HTTP status; 0 when no response arrived (see ``error``)."""
    latency_us: int
    error: str | None = None
    body: str = ""
    response_headers: Mapping[str, str] = field(default_factory=dict)
    echo: Mapping[str, Any] = field(default_factory=dict)
    """The answering probe's JSON (empty when something else answered, e.g. Envoy's 403)."""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def cluster(self) -> str | None:
        """The cluster of the probe that answered."""
        return self.echo.get("cluster")

    @property
    def instance(self) -> str | None:
        return self.echo.get("instance")

    @property
    def version(self) -> str | None:
        return self.echo.get("version")

    @property
    def zone(self) -> str | None:
        return self.echo.get("zone")

    @property
    def request_headers(self) -> Mapping[str, str]:
        """Headers as the answering app received them (after every proxy on the way)."""
        headers: Mapping[str, str] = self.echo.get("headers") or {}
        return headers

    @property
    def client_cert_uris(self) -> list[str]:
        """The ``URI=`` values of the x-forwarded-client-cert header the app received (peer identities)."""
        xfcc = self.request_headers.get("x-forwarded-client-cert", "")
        uris = []
        for element in xfcc.split(","):
            for pair in element.split(";"):
                key, _, value = pair.partition("=")
                if key.strip().lower() == "uri":
                    uris.append(value.strip().strip('"'))
        return uris

    def describe(self) -> str:
        """One line, for failure messages."""
        if self.status == 0:
            return f"no response ({self.error})"
        where = f" from {self.instance} in {self.cluster}" if self.cluster else ""
        body = "" if self.echo else f" body={self.body[:60]!r}"
        return f"{self.status}{where}{body}"


@dataclass(frozen=True)
class CallResult:
    """The responses to ``count`` calls from one probe to one URL."""

    source: str
    """Who called, e.g. ``client/v1 in ns on cluster1``."""
    url: str
    responses: tuple[Response, ...]
    request: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.responses)

    def statuses(self) -> Counter[int]:
        return Counter(r.status for r in self.responses)

    def clusters(self) -> Counter[str]:
        """How many calls each cluster answered (by the answering probe's report)."""
        return Counter(r.cluster for r in self.responses if r.cluster)

    def errors(self) -> Counter[str]:
        return Counter(r.error for r in self.responses if r.error)

    def summary(self, samples: int = 3) -> str:
        """What happened, in a few lines: status counts, clusters that answered, sample responses."""
        lines = [f"{len(self)} calls from {self.source} to {self.url}",
                 f"  statuses: {dict(self.statuses())}"]
        if self.clusters():
            lines.append(f"  answered by clusters: {dict(self.clusters())}")
        if self.errors():
            lines.append(f"  errors: {dict(self.errors())}")
        for response in self.responses[:samples]:
            lines.append(f"  e.g. {response.describe()}")
        return redact("\n".join(lines))  # a token in a URL never reaches a report

    def to_json(self) -> str:
        """Every call, for an attachment; end-user tokens (in headers, URLs, echoed requests) are redacted."""
        return redact(json.dumps({
            "source": self.source, "url": self.url, "request": dict(self.request),
            "responses": [
                {"status": r.status, "latencyUs": r.latency_us, "error": r.error, "cluster": r.cluster,
                 "instance": r.instance, "requestHeaders": dict(r.request_headers), "body": r.body[:2000]}
                for r in self.responses
            ],
        }, indent=1))


def _response(call: Mapping[str, Any]) -> Response:
    body = str(call.get("body") or "")
    echo: dict[str, Any] = {}
    if body.startswith("{"):
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict) and "instance" in parsed and "cluster" in parsed:
                echo = parsed
        except ValueError:
            pass
    return Response(
        status=int(call.get("status") or 0),
        latency_us=int(call.get("latencyUs") or 0),
        error=call.get("error"),
        body=body,
        response_headers=call.get("headers") or {},
        echo=echo,
    )


class ProbeClient:
    """Sends calls from probe workloads through a provider."""

    def __init__(self, provider: Provider, call_timeout_s: float, forward_timeout_s: float) -> None:
        self.provider = provider
        self.call_timeout_s = call_timeout_s
        self.forward_timeout_s = forward_timeout_s

    def call(
        self,
        source: ProbeHandle,
        url: str,
        count: int = 1,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "GET",
        concurrency: int = 1,
        new_connection: bool = False,
        instance: int = 0,
    ) -> CallResult:
        """Make ``count`` calls from ``source`` to ``url`` and return every response."""
        request = {
            "url": url, "count": count, "concurrency": concurrency, "method": method,
            "headers": dict(headers or {}), "timeout_ms": int(self.call_timeout_s * 1000),
            "new_connection": new_connection, "max_duration_ms": int(self.forward_timeout_s * 1000),
        }
        answer = self.provider.forward(source, request, instance=instance)
        calls = answer.get("calls") if isinstance(answer, Mapping) else None
        if not isinstance(calls, list):
            raise ProviderError(f"probe {source} gave an unexpected /forward answer: {str(answer)[:200]}")
        return CallResult(str(source), url, tuple(_response(c) for c in calls), request)
