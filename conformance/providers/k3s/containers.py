"""The k3s provider's one seam to Docker: every call goes through testcontainers (and docker-py under it).

- The run's network: a testcontainers ``Network`` with the /24 meshconf chose (``addresses.py``).
- Each node: a ``K3SContainer`` (testcontainers' k3s module) for a server, a plain ``DockerContainer`` of the
  same image for an agent, started from its :class:`~conformance.providers.k3s.nodes.Node`.
- Images: pulled (or built) once on the host and saved under the run directory, which every node mounts.
- Commands inside a node (routes, ``k3s ctr images import``, reading its kubeconfig): ``docker exec``.

Ryuk, testcontainers' reaper, watches this process: every container and network testcontainers creates carries
its session label, and when the process is gone (killed included) Ryuk removes them within its reconnection
timeout (10 s). A run whose mesh must outlive the process (``meshconf up``, ``--keep``) turns Ryuk off before
anything is created; ``meshconf down`` then removes what the run directory records.

Docker is found the way testcontainers finds it (``DOCKER_HOST``, the docker context, or
``~/.testcontainers.properties``), which is also how the tests put a recording Docker engine under it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conformance.errors import EnvironmentBroken, ProviderError, UsageError
from conformance.providers.k3s.nodes import IMAGES_MOUNT, RUN_LABEL, Node
from conformance.providers.kube.images import Image
from conformance.providers.kube.runner import Result, Runner, SubprocessRunner

__all__ = ["K3sDocker", "K3sRunner", "image_file"]

START_TIMEOUT_S = 180.0
"""A k3s server logging "Node controller sync successful" (its node registered), from a started container."""
_READY_LOG = "Node controller sync successful"
_CONNECTION_HINT = (" (when meshconf itself runs in a container, tell testcontainers how it reaches the others: "
                    "TESTCONTAINERS_CONNECTION_MODE=bridge_ip or docker_host)")


def _testcontainers() -> Any:
    try:
        import testcontainers.core.container
        import testcontainers.core.network
    except ImportError:
        raise UsageError("the k3s provider needs testcontainers: pip install 'meshconf[k3s]'") from None
    return testcontainers


def image_file(image: str) -> str:
    """The file an image is saved to under ``$RUN/images``: ``python:3.12-alpine`` -> ``python_3.12-alpine.tar``."""
    return image.replace("/", "_").replace(":", "_").replace("@", "_") + ".tar"


class K3sDocker:
    """The Docker side of one k3s run. ``reap``: leave what this creates to Ryuk if this process dies (True), or
    not (False: a kept mesh); None creates nothing (removal, logs)."""

    def __init__(self, reap: bool | None) -> None:
        tc = _testcontainers()
        from testcontainers.core.config import testcontainers_config
        from testcontainers.core.docker_client import DockerClient

        if reap is not None:  # read by testcontainers when it creates; a kept mesh must outlive this process
            testcontainers_config.ryuk_disabled = not reap
        self.reap = bool(reap)
        self._tc = tc
        try:
            self.docker = DockerClient()
        except Exception as exc:  # docker-py raises DockerException (and others) when no daemon answers
            raise EnvironmentBroken(f"Docker does not answer: {exc} (is it running? see `meshconf doctor --provider "
                                    "k3s`)") from None
        self.containers: dict[str, Any] = {}
        self.network: Any = None

    @property
    def client(self) -> Any:
        """docker-py's client, as testcontainers configured it."""
        return self.docker.client

    def start_reaper(self) -> None:
        """Start Ryuk now, before anything is created: testcontainers would start it with the first container,
        so a network made before that (and a run killed in between) would go unreaped, and two containers
        started side by side would each try to start it (``Reaper.get_instance`` is not thread-safe)."""
        if self.reap:
            from testcontainers.core.container import Reaper

            try:
                Reaper.get_instance()
            except Exception as exc:  # testcontainers' and docker-py's errors, or a KeyError in what Docker said
                raise EnvironmentBroken(f"Ryuk (testcontainers' reaper) did not start: {str(exc)[:200] or repr(exc)}"
                                        f"{_CONNECTION_HINT}; or keep the mesh (`meshconf up`), which runs without "
                                        "it") from None

    # -- network -------------------------------------------------------------------------------------------

    def used_subnets(self) -> list[str]:
        """The IPv4 subnets of every docker network there is."""
        subnets = []
        for network in self.client.networks.list():
            for config in ((network.attrs.get("IPAM") or {}).get("Config") or []):
                if config.get("Subnet"):
                    subnets.append(str(config["Subnet"]))
        return subnets

    def create_network(self, name: str, subnet: str, run: str) -> None:
        """The run's bridge network with ``subnet`` (so node addresses can be pinned), labelled with the run."""
        from docker.types import IPAMConfig, IPAMPool

        if any(n.name == name for n in self.client.networks.list(names=[name])):
            raise ProviderError(f"docker network {name} already exists (a k3s run left it?): `meshconf down` that run, "
                                f"or `docker network rm {name}`")
        gateway = str(ipaddress.ip_network(subnet)[1])
        network = self._tc.core.network.Network(docker_network_kw={
            "driver": "bridge", "labels": {RUN_LABEL: run},
            "ipam": IPAMConfig(pool_configs=[IPAMPool(subnet=subnet, gateway=gateway)])})
        network.name = name
        self.network = network.create()

    # -- images --------------------------------------------------------------------------------------------

    def ensure_image(self, image: Image) -> None:
        """Pull ``image`` (or build it from its Dockerfile) unless the host has it."""
        import docker.errors

        try:
            self.client.images.get(image.name)
            return
        except docker.errors.ImageNotFound:
            pass
        try:
            if image.dockerfile is None:
                self.client.images.pull(image.name)
            else:
                self.client.images.build(path=str(image.dockerfile.parent), dockerfile=image.dockerfile.name,
                                         tag=image.name, buildargs=dict(image.build_args), rm=True)
        except docker.errors.DockerException as exc:
            raise ProviderError(f"image {image.name} could not be {'pulled' if image.dockerfile is None else 'built'}: "
                                f"{str(exc)[:300]}") from None

    def save_image(self, name: str, dest: Path) -> None:
        """``docker save`` of ``name`` into ``dest`` (written whole, then renamed)."""
        partial = dest.with_name(f".{dest.name}.partial")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with partial.open("wb") as out:
            for chunk in self.client.images.get(name).save(named=True):
                out.write(chunk)
        partial.replace(dest)

    # -- nodes ---------------------------------------------------------------------------------------------

    def start_node(self, node: Node, images_dir: Path, run: str, token: str) -> None:
        """Start ``node``'s container on the run's network at its pinned address; a server returns once k3s
        registered its node."""
        from docker import version
        from docker.types import EndpointConfig

        if self.network is None:
            raise ProviderError("internal: the run's network is not created yet")
        env = {key: token if key == "K3S_TOKEN" else value for key, value in node.env.items()}
        if node.role == "server":
            try:
                container = _server_container(node.image)
            except Exception as exc:  # K3SContainer asks for its host address before it exists; see below
                raise ProviderError(f"k3s node {node.name} could not be set up: {str(exc)[:200] or repr(exc)}"
                                    f"{_CONNECTION_HINT}") from None
            container.env.pop("K3S_URL", None)  # testcontainers points K3S_URL at itself; a server joins nobody
        else:
            container = self._tc.core.container.DockerContainer(node.image)
            container.with_volume_mapping("/sys/fs/cgroup", "/sys/fs/cgroup", "rw")
            container.with_tmpfs_mount("/run")
            container.with_tmpfs_mount("/var/run")
        container.ports.clear()  # the host reaches every node at its address on the network: publish nothing
        container.with_name(node.name)
        container.with_command(list(node.args))
        container.with_envs(**env)
        container.with_volume_mapping(str(images_dir), IMAGES_MOUNT, "ro")
        network = self.network.name
        container.with_kwargs(
            privileged=True, hostname=node.name, labels={**node.labels, RUN_LABEL: run}, network=network,
            networking_config={network: EndpointConfig(version.__version__, ipv4_address=node.address)})
        try:
            container.start()
        except Exception as exc:  # testcontainers and docker-py raise their own errors, and TimeoutError
            said = str(exc).strip().splitlines()
            raise ProviderError(f"k3s node {node.name} did not start: {said[0][:300] if said else repr(exc)}") from None
        finally:
            if container._container is not None:  # created: removed with the run, started or not
                self.containers[node.name] = container

    def exec(self, name: str, argv: Sequence[str], timeout_s: float = 600.0) -> Result:
        """Run ``argv`` in container ``name`` (``docker exec``); stdout and stderr come back together. The Docker
        API has no timeout for an exec: ``timeout_s`` is the Runner interface's, not enforced here."""
        container = self._container(name)
        result = container.exec_run(list(argv))
        output = result.output.decode(errors="replace") if isinstance(result.output, bytes) else str(result.output)
        code = 1 if result.exit_code is None else int(result.exit_code)
        return Result(code, output, "" if code == 0 else output)

    def logs(self, name: str) -> str:
        return bytes(self._container(name).logs()).decode(errors="replace")

    def _container(self, name: str) -> Any:
        import docker.errors

        if name in self.containers:
            return self.containers[name].get_wrapped_container()
        try:
            return self.client.containers.get(name)
        except docker.errors.NotFound:
            raise ProviderError(f"k3s node {name} is gone (its container no longer exists)") from None

    # -- removal -------------------------------------------------------------------------------------------

    def remove(self, containers: Sequence[str], network: str | None) -> list[str]:
        """Remove the named containers (and their anonymous volumes) and the network; returns what could not be
        removed, one line each. Containers already gone (Ryuk, or an earlier try) are fine."""
        import docker.errors

        problems = []
        for name in containers:
            try:
                self.client.containers.get(name).remove(force=True, v=True)
            except docker.errors.NotFound:
                pass
            except docker.errors.DockerException as exc:
                problems.append(f"container {name}: {str(exc)[:200]}")
        if network:
            for found in [n for n in self.client.networks.list(names=[network]) if n.name == network]:
                try:
                    found.remove()
                except docker.errors.NotFound:
                    pass
                except docker.errors.DockerException as exc:
                    problems.append(f"network {network}: {str(exc)[:200]}")
        return problems

    def existing(self, names: Sequence[str]) -> list[str]:
        """Which of the containers ``names`` exist."""
        found = []
        for container in self.client.containers.list(all=True):
            if container.name in names:
                found.append(str(container.name))
        return sorted(found)


class K3sRunner(Runner):
    """Host commands (kubectl, istioctl) through ``host`` (processes); commands for a node container through the
    Docker API."""

    def __init__(self, docker: Callable[[], K3sDocker], host: Runner | None = None) -> None:
        self._docker = docker
        self.host = host or SubprocessRunner()

    def run(self, argv: Sequence[str], stdin: str | None = None, timeout_s: float = 600.0) -> Result:
        return self.host.run(argv, stdin, timeout_s)

    def exec_in(self, container: str, argv: Sequence[str], timeout_s: float = 600.0) -> Result:
        return self._docker().exec(container, argv, timeout_s)



def _server_container(image: str) -> Any:
    """testcontainers' K3SContainer, waiting for k3s with the structured log strategy: K3SContainer's own wait
    uses the string form of ``wait_for_logs``, which testcontainers deprecates."""
    from testcontainers.community.k3s import K3SContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    class Server(K3SContainer):
        def _connect(self) -> None:
            LogMessageWaitStrategy(_READY_LOG).with_startup_timeout(int(START_TIMEOUT_S)).wait_until_ready(self)

    return Server(image)
