"""The check declaration: ``@check(id, area=..., description=..., features=[...])`` on a pytest test.

A check's id is its file name in kebab case (``suites/mtls/test_mtls_strict_peer_identity.py`` ->
``mtls-strict-peer-identity``); selection flags, the reports and Allure's feature label all use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import allure
import pytest

from conformance.errors import UsageError
from conformance.provider import Feature

__all__ = ["Area", "CheckInfo", "Severity", "check", "check_id_for_file", "check_info"]

F = TypeVar("F", bound=Callable[..., Any])
_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)+$")


class Area(StrEnum):
    MTLS = "mtls"
    AUTHN = "authn"
    AUTHZ = "authz"
    FAILOVER = "failover"
    MULTICLUSTER = "multicluster"
    LATENCY = "latency"
    INGRESS = "ingress"
    EGRESS = "egress"


class Severity(StrEnum):
    BLOCKER = "blocker"
    CRITICAL = "critical"
    NORMAL = "normal"
    MINOR = "minor"


@dataclass(frozen=True)
class CheckInfo:
    id: str
    area: Area
    description: str
    features: frozenset[Feature]
    severity: Severity = Severity.CRITICAL
    serial: bool = False
    """Never runs beside another check: it changes mesh-wide config, or it measures latency (on a small
    machine a neighbour's traffic and Envoy start-ups would be measured too)."""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "area": str(self.area), "description": self.description,
                "features": sorted(str(f) for f in self.features), "severity": str(self.severity),
                "serial": self.serial}


def check(
    check_id: str,
    *,
    area: Area | str,
    description: str,
    features: Iterable[Feature] = (),
    severity: Severity | str = Severity.CRITICAL,
    serial: bool = False,
) -> Callable[[F], F]:
    """Declare a pytest test as a conformance check."""
    if not _ID.match(check_id):
        raise UsageError(f"check id {check_id!r} must be kebab-case, e.g. mtls-strict-peer-identity")
    if not description.strip() or "\n" in description.strip():
        raise UsageError(f"check {check_id}: description must be one sentence on one line")
    info = CheckInfo(check_id, Area(area), description.strip(), frozenset(features), Severity(severity), serial)

    def decorate(fn: F) -> F:
        fn.__meshconf_check__ = info  # type: ignore[attr-defined]
        # Allure labels as markers, so a check skipped before it starts still sits under its area and id
        for label in (allure.epic(str(info.area)), allure.feature(info.id), allure.story(info.description),
                      allure.severity(allure.severity_level(str(info.severity))),
                      allure.description(info.description), allure.title(info.id)):
            fn = label(fn)
        marked: F = pytest.mark.check(info)(fn)
        if serial:
            marked = pytest.mark.serial(marked)
        return marked

    return decorate


def check_info(item: pytest.Item) -> CheckInfo | None:
    """The CheckInfo of a collected test, or None if it is not a check."""
    marker = item.get_closest_marker("check")
    if marker is None or not marker.args:
        return None
    info = marker.args[0]
    return info if isinstance(info, CheckInfo) else None


def check_id_for_file(file_name: str) -> str:
    """``test_mtls_strict_peer_identity.py`` -> ``mtls-strict-peer-identity``."""
    stem = file_name.removesuffix(".py").removeprefix("test_")
    return stem.replace("_", "-")
