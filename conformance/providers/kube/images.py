"""The container images an installing provider (kind, k3s) puts into every cluster, pulled once on the host.

Docker Hub limits anonymous pulls per address; a run that lets every node of every cluster pull the same
images hits that limit quickly. So the plans pull each image once on the host (skipped when the host has it)
and copy it into each cluster (kind: ``kind load docker-image``; k3s: ``k3s ctr images import``); the
manifests use ``IfNotPresent`` (the default for a tagged image), so no node pulls it again.

``--image-hub H`` names a Docker Hub mirror: ``H/istio/pilot:1.28.0``, ``H/library/python:3.12-alpine``,
``H/locustio/locust:2.47.0`` instead of Docker Hub's own. The IstioOperator's ``hub`` is then ``H/istio``, so
Istio pulls (and the plan loads) exactly those names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from conformance.load.distributed import HDRHISTOGRAM, LOCUST_IMAGE, LOCUST_VERSION
from conformance.providers.kube.probes import probe_image

__all__ = [
    "DOCKER_HUB",
    "LOCUST_DOCKERFILE",
    "Image",
    "hub_image",
    "istio_hub",
    "istio_images",
    "locust_image",
    "probe_image",
]

DOCKER_HUB = "docker.io"


def _locust_dockerfile() -> Path:
    """``workloads/locust/kubernetes/Dockerfile``, from the repository or the wheel."""
    repo = Path(__file__).resolve().parents[3] / "workloads" / "locust" / "kubernetes" / "Dockerfile"
    return repo if repo.is_file() else Path(__file__).resolve().parents[2] / "_bundled" / "locust" / "Dockerfile"


LOCUST_DOCKERFILE = _locust_dockerfile()


@dataclass(frozen=True)
class Image:
    """An image to have in every cluster: pulled, or built from ``dockerfile`` (with ``build_args``)."""

    name: str
    dockerfile: Path | None = None
    build_args: tuple[tuple[str, str], ...] = ()


def hub_image(repository: str, hub: str | None) -> str:
    """``library/python:3.12-alpine`` -> ``python:3.12-alpine`` (Docker Hub) or ``<hub>/library/python:...``."""
    if hub:
        return f"{hub}/{repository}"
    return repository.removeprefix("library/")


def istio_hub(hub: str | None) -> str:
    """The IstioOperator ``spec.hub``: Docker Hub's ``docker.io/istio`` (what Istio's release builds default to),
    or the mirror's ``<hub>/istio``."""
    return f"{hub or DOCKER_HUB}/istio"


def istio_images(version: str, hub: str | None) -> tuple[Image, ...]:
    """istiod (``pilot``) and the proxy (``proxyv2``: sidecars and gateways) of ``version``."""
    return tuple(Image(f"{istio_hub(hub)}/{name}:{version}") for name in ("pilot", "proxyv2"))


def locust_image(hub: str | None, dockerfile: Path = LOCUST_DOCKERFILE) -> Image:
    """meshconf's Locust image: the official one plus ``hdrhistogram``, built on the host from
    ``workloads/locust/kubernetes/Dockerfile`` so no pod installs anything from the internet."""
    base = hub_image(f"locustio/locust:{LOCUST_VERSION}", hub)
    return Image(LOCUST_IMAGE, dockerfile, (("LOCUST_IMAGE", base), ("HDRHISTOGRAM", HDRHISTOGRAM)))
