"""HTTP to a pod's port from this machine, two ways: the API server's pod proxy, or a port-forward.

The pod proxy (``/api/v1/namespaces/<ns>/pods/<pod>:<port>/proxy/<path>``) needs the API server to reach the
pod network. Some clusters close that path (private GKE opens only 443 and 10250 from the control plane to
the nodes), while a port-forward (``pods/<pod>/portforward``) goes API server -> kubelet (10250) -> pod, the
way ``kubectl port-forward`` does. The existing provider tries the proxy once at preflight and falls back to
the port-forward when it fails.

Neither path honours ``HTTPS_PROXY``/``HTTP_PROXY`` from the environment (the ``kubernetes`` client does not,
so the POST through httpx does not either, ``trust_env=False``); a kubeconfig's ``proxy-url`` is honoured by
both.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Mapping
from typing import Any

from conformance.errors import ProviderError

__all__ = ["TRANSPORTS", "http_over_socket", "post_through_proxy", "through_port_forward"]

TRANSPORTS = ("proxy", "port-forward")
_MAX_ANSWER = 64 << 20


def post_through_proxy(configuration: Any, context: str, namespace: str, target: str, path: str,
                       body: Mapping[str, Any], timeout_s: float) -> str:
    """POST ``body`` (JSON) to ``target`` (``pod:port``) through the pod proxy with this context's credentials.

    The generated client's POST takes no request body, so this speaks to the same endpoint with httpx.
    """
    import httpx

    cfg = configuration
    headers = {"Content-Type": "application/json"}
    token = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    if token:
        headers["Authorization"] = token
    tls: ssl.SSLContext | bool = False
    if cfg.verify_ssl:
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
    elif cfg.cert_file:
        tls = ssl.create_default_context()
        tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
        tls.load_cert_chain(cfg.cert_file, cfg.key_file)
    url = f"{cfg.host}/api/v1/namespaces/{namespace}/pods/{target}/proxy/{path.lstrip('/')}"
    try:
        # like every GET through the kubernetes client: no proxy from the environment, only the kubeconfig's
        with httpx.Client(verify=tls, timeout=timeout_s, trust_env=False, proxy=cfg.proxy or None) as http:
            response = http.post(url, content=json.dumps(body), headers=headers)
    except httpx.HTTPError as exc:
        raise ProviderError(f"{context}: POST {path} on {namespace}/{target}: {exc}") from None
    if response.status_code != 200:
        raise ProviderError(f"{context}: POST {path} on {namespace}/{target} answered "
                            f"{response.status_code}: {response.text[:200]}")
    return response.text


def through_port_forward(core: Any, context: str, namespace: str, pod: str, port: int, method: str, path: str,
                         body: Mapping[str, Any] | None, timeout_s: float) -> str:
    """One HTTP/1.1 request to ``pod:port`` over a port-forward; returns the body of a 200 answer.

    ``core`` is a CoreV1Api on an ApiClient of its own: ``kubernetes.stream.portforward`` swaps the client's
    ``call_api`` while it connects, which would send another thread's requests over a websocket.
    """
    from kubernetes.stream import portforward

    what = f"{context}: {method} {path} on {namespace}/{pod}:{port} (port-forward)"
    try:
        forward = portforward(core.connect_get_namespaced_pod_portforward, pod, namespace, ports=str(port))
    except Exception as exc:  # the websocket layer raises ApiException and transport errors alike
        raise ProviderError(f"{what}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else exc}") from None
    try:
        status, text = http_over_socket(forward.socket(port), method, path, body, timeout_s)
    except (OSError, ValueError) as exc:
        raise ProviderError(f"{what}: {exc}") from None
    finally:
        forward.close()
    if status != 200:
        raise ProviderError(f"{what} answered {status}: {text[:200]}")
    return text


def http_over_socket(sock: Any, method: str, path: str, body: Mapping[str, Any] | None,
                     timeout_s: float) -> tuple[int, str]:
    """Write one request (``Connection: close``) on a connected socket and read one answer: up to its
    Content-Length, the end of its chunks, or the socket's end (a port-forward need not close the stream when the
    pod closes its side, so framing decides, not EOF alone).

    Returns (status, body). Raises ValueError for an answer that is not HTTP/1.x, OSError on socket errors,
    TimeoutError when the answer does not complete within ``timeout_s``.
    """
    payload = json.dumps(body).encode() if body is not None else b""
    head = (f"{method.upper()} /{path.lstrip('/')} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n")
    sock.setblocking(True)
    sock.settimeout(timeout_s)
    sock.sendall(head.encode("latin-1") + payload)
    deadline = time.monotonic() + timeout_s
    answer = bytearray()
    while not _complete(bytes(answer)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete answer within {timeout_s:.0f}s")
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            raise TimeoutError(f"no complete answer within {timeout_s:.0f}s") from None
        if not chunk:
            break
        answer += chunk
        if len(answer) > _MAX_ANSWER:
            raise ValueError(f"answer larger than {_MAX_ANSWER} bytes")
    status, fields, rest = _parse_head(bytes(answer))
    if "chunked" in fields.get("transfer-encoding", "").lower():
        rest = _unchunk(rest)
    elif "content-length" in fields:
        rest = rest[: int(fields["content-length"])]
    return status, rest.decode("utf-8", "replace")


def _parse_head(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    header, separator, rest = answer.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if not separator or len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP answer: {status_line[:60]!r}")
    fields = {k.strip().lower(): v.strip() for k, _, v in
              (line.decode("latin-1").partition(":") for line in header.split(b"\r\n")[1:])}
    return int(parts[1]), fields, rest


def _complete(answer: bytes) -> bool:
    if b"\r\n\r\n" not in answer:
        return False
    _, fields, rest = _parse_head(answer)
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return rest.endswith(b"0\r\n\r\n")
    if "content-length" in fields:
        return len(rest) >= int(fields["content-length"])
    return False  # read until the other side closes


def _unchunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)
