"""KubeAPI: one cluster's API server, through the official ``kubernetes`` Python client.

Everything the kind and existing providers do at run time goes through here: server-side apply of YAML
documents, waits on Deployments, the pod proxy to a probe's control port, exec into the ``istio-proxy``
container for Envoy admin, logs and events for diagnostics. The client is imported when a KubeAPI is made,
so nothing else in meshconf needs it. Secrets are only ever listed as metadata (names, annotations), never
read. An exec or port-forward gets an ApiClient of its own, so one KubeAPI serves several threads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conformance.errors import ProviderError, TimeoutExpired, UsageError
from conformance.istio import doc_ref
from conformance.providers.kube.podhttp import post_through_proxy, through_port_forward

__all__ = ["FIELD_MANAGER", "KubeAPI", "Pod"]

FIELD_MANAGER = "meshconf"


@dataclass(frozen=True)
class Pod:
    name: str
    ip: str
    node: str
    ready: bool
    labels: Mapping[str, str]


def _client() -> Any:
    try:
        import kubernetes
    except ImportError:
        raise UsageError("this provider needs the kubernetes client: pip install 'meshconf[kind]'") from None
    return kubernetes


class KubeAPI:
    """A cluster's API server as seen through one kubeconfig context."""

    def __init__(self, context: str, kubeconfig: Path | None = None) -> None:
        kubernetes = _client()
        self.context = context
        self.kubeconfig = kubeconfig
        self._configuration = kubernetes.client.Configuration()
        # No proxy from the environment for any call (recent clients read HTTPS_PROXY, older ones do not; httpx
        # would): only a kubeconfig's proxy-url, which load_kube_config sets below, for GET, POST and websockets.
        self._configuration.proxy = None
        try:
            kubernetes.config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, context=context,
                                               client_configuration=self._configuration, persist_config=False)
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise ProviderError(f"kubeconfig context {context!r} cannot be loaded: {exc} "
                                "(check `kubectl config get-contexts`)") from None
        self._api = kubernetes.client.ApiClient(self._configuration)
        self.core = kubernetes.client.CoreV1Api(self._api)
        self.apps = kubernetes.client.AppsV1Api(self._api)
        self._dynamic: Any = None
        self._errors = (kubernetes.client.exceptions.ApiException,)
        self.transport = "proxy"
        """How probe control calls reach pods: ``proxy`` (API server pod proxy) or ``port-forward``."""

    # -- reading -------------------------------------------------------------------------------------------

    def server_version(self) -> str:
        """``v1.34.0``; raises ProviderError when the API server does not answer."""
        kubernetes = _client()
        try:
            info = kubernetes.client.VersionApi(self._api).get_code(_request_timeout=10)
        except Exception as exc:  # any transport failure means "unreachable"
            raise ProviderError(f"context {self.context}: API server unreachable ({_first_line(exc)})") from None
        return str(info.git_version)

    def pods(self, namespace: str, selector: Mapping[str, str]) -> list[Pod]:
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        items = self._call(lambda: self.core.list_namespaced_pod(namespace, label_selector=label_selector),
                           f"list pods {label_selector} in {namespace}")
        return [_pod(item) for item in items.items if item.metadata.deletion_timestamp is None]

    def deployment(self, namespace: str, name: str) -> Any | None:
        """The Deployment object, or None if it does not exist."""
        try:
            return self.apps.read_namespaced_deployment(name, namespace, _request_timeout=15)
        except self._errors as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise ProviderError(f"{self.context}: read deployment {namespace}/{name}: {exc.reason}") from None

    def secret_metadata(self, namespace: str, label_selector: str) -> list[tuple[str, dict[str, str]]] | None:
        """(name, annotations) of the Secrets ``label_selector`` picks, or None if RBAC forbids listing them.

        A metadata-only list (``as=PartialObjectMetadataList``): the API server sends no secret data at all.
        """
        accept = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
        try:
            response = self.core.list_namespaced_secret(namespace, label_selector=label_selector,
                                                        _headers={"Accept": accept}, _preload_content=False,
                                                        _request_timeout=15)
        except self._errors as exc:
            if getattr(exc, "status", None) == 403:
                return None
            raise ProviderError(f"{self.context}: list secrets in {namespace}: {exc.status} {exc.reason}") from None
        items = json.loads(response.data).get("items") or []
        return sorted((str(item["metadata"]["name"]), dict(item["metadata"].get("annotations") or {}))
                      for item in items)

    def deployments(self, namespace: str, selector: Mapping[str, str]) -> list[Any]:
        """The Deployments ``selector`` picks (e.g. every istiod: ``app=istiod``, any revision)."""
        label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
        found = self._call(lambda: self.apps.list_namespaced_deployment(namespace, label_selector=label_selector),
                           f"list deployments {label_selector} in {namespace}")
        return list(found.items)

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data, or None if it does not exist or RBAC forbids reading it."""
        try:
            found = self.core.read_namespaced_config_map(name, namespace, _request_timeout=15)
        except self._errors as exc:
            if getattr(exc, "status", None) in (403, 404):
                return None
            raise ProviderError(f"{self.context}: read configmap {namespace}/{name}: {exc.reason}") from None
        return dict(found.data or {})

    def config_map(self, namespace: str, name: str) -> tuple[dict[str, str], str] | None:
        """A ConfigMap's data and resourceVersion, or None if it does not exist; ProviderError if unreadable."""
        try:
            found = self.core.read_namespaced_config_map(name, namespace, _request_timeout=15)
        except self._errors as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise ProviderError(f"{self.context}: read configmap {namespace}/{name}: "
                                f"{exc.status} {exc.reason}") from None
        return dict(found.data or {}), str(found.metadata.resource_version or "")

    def patch_config_map(self, namespace: str, name: str, data: Mapping[str, str], resource_version: str) -> None:
        """Set keys of a ConfigMap's data, only if it is still at ``resource_version`` (a merge patch carrying
        it: the API server answers 409 Conflict when someone changed the ConfigMap since it was read)."""
        body = {"metadata": {"resourceVersion": resource_version}, "data": dict(data)}
        self._call(lambda: self.core.patch_namespaced_config_map(
            name, namespace, body, field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json",
            _request_timeout=15),
                   f"patch configmap {namespace}/{name}")

    def node_labels(self) -> list[dict[str, str]] | None:
        """Every node's labels, or None if RBAC forbids listing nodes."""
        try:
            found = self.core.list_node(_request_timeout=15)
        except self._errors as exc:
            if getattr(exc, "status", None) == 403:
                return None
            raise ProviderError(f"{self.context}: list nodes: {exc.status} {exc.reason}") from None
        return [dict(n.metadata.labels or {}) for n in found.items]

    def read_object(self, doc: Mapping[str, Any]) -> dict[str, Any] | None:
        """The live object ``doc`` names (kind, namespace, name), or None if there is none."""
        resource = self._resource(doc)
        meta = doc.get("metadata") or {}
        try:
            found = self._dyn().get(resource, name=meta.get("name"), namespace=meta.get("namespace"))
        except self._errors as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise ProviderError(f"{self.context}: read {doc_ref(doc)}: {exc.reason}") from None
        return dict(found.to_dict())

    def list_objects(self, api_version: str, kind: str, namespace: str) -> list[dict[str, Any]]:
        """Every live object of ``kind`` in ``namespace``."""
        resource = self._resource({"apiVersion": api_version, "kind": kind})
        try:
            found = self._dyn().get(resource, namespace=namespace)
        except self._errors as exc:
            raise ProviderError(f"{self.context}: list {kind} in {namespace}: {exc.reason}") from None
        return [dict(item) for item in found.to_dict().get("items") or []]

    def namespaces(self, prefix: str) -> list[str]:
        items = self._call(lambda: self.core.list_namespace(), "list namespaces")
        return sorted(str(n.metadata.name) for n in items.items if str(n.metadata.name).startswith(prefix))

    def events(self, namespace: str) -> list[str]:
        items = self._call(lambda: self.core.list_namespaced_event(namespace), f"list events in {namespace}")
        return [f"{e.last_timestamp or e.event_time} {e.type} {e.involved_object.kind}/{e.involved_object.name} "
                f"{e.reason}: {e.message}" for e in items.items]

    def logs(self, namespace: str, pod: str, container: str, previous: bool = False) -> str:
        try:
            return str(self.core.read_namespaced_pod_log(pod, namespace, container=container, previous=previous,
                                                         tail_lines=2000, _request_timeout=30))
        except self._errors as exc:
            return f"(no {'previous ' if previous else ''}log: {exc.reason})"

    # -- writing -------------------------------------------------------------------------------------------

    def apply(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Server-side apply each document (field manager ``meshconf``), in order."""
        for doc in docs:
            resource = self._resource(doc)
            meta = doc.get("metadata") or {}

            def apply_one(resource: Any = resource, doc: Mapping[str, Any] = doc, meta: Any = meta) -> Any:
                return self._dyn().server_side_apply(resource, body=dict(doc), name=meta.get("name"),
                                                     namespace=meta.get("namespace"), field_manager=FIELD_MANAGER,
                                                     force_conflicts=True)

            self._call(apply_one, f"apply {doc_ref(doc)}")

    def delete(self, docs: Iterable[Mapping[str, Any]]) -> None:
        """Delete each document; ones already gone are fine."""
        for doc in docs:
            resource = self._resource(doc)
            meta = doc.get("metadata") or {}
            try:
                self._dyn().delete(resource, name=meta.get("name"), namespace=meta.get("namespace"))
            except self._errors as exc:
                if getattr(exc, "status", None) != 404:
                    raise ProviderError(f"{self.context}: delete {doc_ref(doc)}: {exc.reason}") from None

    def delete_namespace(self, namespace: str, timeout_s: float) -> None:
        try:
            self.core.delete_namespace(namespace, _request_timeout=30)
        except self._errors as exc:
            if getattr(exc, "status", None) == 404:
                return
            raise ProviderError(f"{self.context}: delete namespace {namespace}: {exc.reason}") from None
        wait_for(lambda: namespace not in self.namespaces(namespace), timeout_s,
                 f"namespace {namespace} in {self.context} to be deleted")

    def scale(self, namespace: str, deployment: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        self._call(lambda: self.apps.patch_namespaced_deployment_scale(deployment, namespace, body),
                   f"scale {namespace}/{deployment} to {replicas}")

    def restart_deployment(self, namespace: str, deployment: str) -> None:
        """What ``kubectl rollout restart`` does: stamp the pod template, so the Deployment rolls its pods."""
        import datetime as dt

        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": stamp}}}}}
        self._call(lambda: self.apps.patch_namespaced_deployment(deployment, namespace, body),
                   f"restart {namespace}/{deployment}")

    def load_balancer_address(self, namespace: str, service: str) -> str | None:
        """The external IP (or hostname) a LoadBalancer Service got, or None while it has none."""
        found = self._call(lambda: self.core.read_namespaced_service(service, namespace),
                           f"read service {namespace}/{service}")
        ingress = getattr(getattr(found.status, "load_balancer", None), "ingress", None) or []
        for entry in ingress:
            address = getattr(entry, "ip", None) or getattr(entry, "hostname", None)
            if address:
                return str(address)
        return None

    def delete_pod(self, namespace: str, name: str) -> None:
        self._call(lambda: self.core.delete_namespaced_pod(name, namespace), f"delete pod {namespace}/{name}")

    def delete_pods(self, namespace: str, selector: Mapping[str, str]) -> list[str]:
        names = [p.name for p in self.pods(namespace, selector)]
        for name in names:
            def delete_one(name: str = name) -> Any:
                return self.core.delete_namespaced_pod(name, namespace)

            self._call(delete_one, f"delete pod {namespace}/{name}")
        return names

    def wait_rollout(self, namespace: str, deployment: str, timeout_s: float) -> list[Pod]:
        """Wait until every replica of ``deployment`` is updated and ready; return its ready pods."""
        def done() -> bool:
            found = self.deployment(namespace, deployment)
            if found is None:
                return False
            status, want = found.status, found.spec.replicas or 0
            return bool((status.observed_generation or 0) >= (found.metadata.generation or 0)
                        and (status.updated_replicas or 0) == want and (status.ready_replicas or 0) == want
                        and (status.replicas or 0) == want)
        wait_for(done, timeout_s, f"deployment {namespace}/{deployment} in {self.context} to be ready",
                 last=lambda: self._rollout_state(namespace, deployment))
        found = self.deployment(namespace, deployment)
        selector = dict(found.spec.selector.match_labels or {}) if found is not None else {}
        return [p for p in self.pods(namespace, selector) if p.ready]

    # -- pods ----------------------------------------------------------------------------------------------

    def proxy(self, namespace: str, pod: str, port: int, method: str, path: str,
              body: Mapping[str, Any] | None = None, timeout_s: float = 60.0) -> Any:
        """Call ``pod:port`` from this machine and return its JSON answer, through :attr:`transport`.

        ``proxy``: the API server's pod proxy (GET with the client's ``connect_get_namespaced_pod_proxy_with_path``;
        the generated POST takes no body, so a POST goes to the same endpoint through httpx). ``port-forward``:
        one HTTP request over a port-forward through the kubelet (``podhttp.py``).
        """
        target = f"{pod}:{port}"
        if self.transport == "port-forward":
            text = through_port_forward(self._own_core(), self.context, namespace, pod, port, method, path, body,
                                        timeout_s)
        elif method.upper() == "GET":
            # raw body: the generated client would otherwise turn the JSON into a Python repr string
            response = self._call(lambda: self.core.connect_get_namespaced_pod_proxy_with_path(
                target, namespace, path.lstrip("/"), _request_timeout=timeout_s, _preload_content=False),
                f"GET {path} on {namespace}/{target}")
            text = response.data.decode() if isinstance(response.data, bytes) else str(response.data)
        else:
            text = post_through_proxy(self._configuration, self.context, namespace, target, path, body or {},
                                      timeout_s)
        try:
            return json.loads(text)
        except ValueError:
            raise ProviderError(f"{namespace}/{target} {path} did not answer JSON: {str(text)[:200]}") from None

    def pod_text(self, namespace: str, pod: str, port: int, path: str, transport: str,
                 timeout_s: float = 15.0) -> str:
        """GET ``path`` on ``pod:port`` through ``transport`` and return the body as text (for preflight)."""
        if transport == "port-forward":
            return through_port_forward(self._own_core(), self.context, namespace, pod, port, "GET", path, None,
                                        timeout_s)
        target = f"{pod}:{port}"
        response = self._call(lambda: self.core.connect_get_namespaced_pod_proxy_with_path(
            target, namespace, path.lstrip("/"), _request_timeout=timeout_s, _preload_content=False),
            f"GET {path} on {namespace}/{target} through the API server's pod proxy")
        return response.data.decode() if isinstance(response.data, bytes) else str(response.data)

    def exec(self, namespace: str, pod: str, container: str, command: Sequence[str]) -> str:
        """Run ``command`` in a container and return its output (``kubectl exec`` through the client).

        ``kubernetes.stream.stream`` swaps its ApiClient's ``call_api`` for a websocket while it runs, so an exec
        gets an ApiClient of its own: other threads keep using this KubeAPI meanwhile.
        """
        from kubernetes.stream import stream

        core = self._own_core()
        return str(self._call(lambda: stream(core.connect_get_namespaced_pod_exec, pod, namespace,
                                             container=container, command=list(command), stderr=True, stdin=False,
                                             stdout=True, tty=False),
                              f"exec {' '.join(command)} in {namespace}/{pod}/{container}"))

    # -- plumbing ------------------------------------------------------------------------------------------

    def _own_core(self) -> Any:
        """A CoreV1Api on a new ApiClient (same configuration) for one websocket call."""
        kubernetes = _client()
        return kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(self._configuration))

    def _dyn(self) -> Any:
        if self._dynamic is None:
            from kubernetes import dynamic

            make: Any = dynamic.DynamicClient
            self._dynamic = make(self._api)
        return self._dynamic

    def _resource(self, doc: Mapping[str, Any]) -> Any:
        try:
            return self._dyn().resources.get(api_version=doc.get("apiVersion"), kind=doc.get("kind"))
        except Exception as exc:  # the dynamic client raises several discovery errors
            raise ProviderError(f"{self.context}: {doc_ref(doc)}: the API server does not serve "
                                f"{doc.get('apiVersion')} {doc.get('kind')} ({_first_line(exc)})") from None

    def _call(self, action: Callable[[], Any], what: str) -> Any:
        try:
            return action()
        except self._errors as exc:
            raise ProviderError(f"{self.context}: {what}: {exc.status} {exc.reason}") from None

    def _rollout_state(self, namespace: str, deployment: str) -> str:
        found = self.deployment(namespace, deployment)
        if found is None:
            return "not created"
        status = found.status
        return (f"{status.ready_replicas or 0}/{found.spec.replicas} ready, {status.updated_replicas or 0} updated; "
                + "; ".join(str(c.message) for c in (status.conditions or [])))


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 1.0,
             last: Callable[[], str] | None = None) -> None:
    """Poll ``predicate`` until it holds; raise TimeoutExpired with the last state seen."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            state = f"; last state: {last()}" if last is not None else ""
            raise TimeoutExpired(f"timed out after {timeout_s:.0f}s waiting for {what}{state}")
        time.sleep(interval_s)


def _pod(item: Any) -> Pod:
    conditions = item.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return Pod(str(item.metadata.name), str(item.status.pod_ip or ""), str(item.spec.node_name or ""), ready,
               dict(item.metadata.labels or {}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
