"""Every container image a kind run needs: the kube layer's (``kube/images.py``: Istio, the probe, Locust) and
MetalLB's, which come from quay.io, not Docker Hub, and keep their names under ``--image-hub``. The plan pulls
each once on the host and copies it into each cluster with ``kind load docker-image`` (kind's "Loading an
Image Into Your Cluster" quick-start section)."""

from conformance.providers.kube.images import (
    DOCKER_HUB,
    LOCUST_DOCKERFILE,
    Image,
    istio_hub,
    istio_images,
    locust_image,
    probe_image,
)

__all__ = [
    "DOCKER_HUB",
    "LOCUST_DOCKERFILE",
    "METALLB_IMAGES",
    "Image",
    "istio_hub",
    "istio_images",
    "locust_image",
    "probe_image",
]

METALLB_IMAGES = ("quay.io/metallb/controller:v0.15.3", "quay.io/metallb/speaker:v0.15.3")
"""The two images ``metallb-native.yaml`` v0.15.3 runs (its controller Deployment and speaker DaemonSet)."""
