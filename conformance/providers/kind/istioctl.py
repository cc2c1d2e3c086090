"""istioctl for ``--istio-version`` lives in the kube layer, shared with k3s: ``kube/istioctl.py``."""

from conformance.providers.kube.istioctl import (
    RELEASES,
    archive_name,
    cache_dir,
    download_istioctl,
    istioctl_version,
    resolve_istioctl,
)

__all__ = ["RELEASES", "archive_name", "cache_dir", "download_istioctl", "istioctl_version", "resolve_istioctl"]
