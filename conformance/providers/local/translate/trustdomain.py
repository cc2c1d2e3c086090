"""Trust-domain aliases in authorization principals, as Istio's ``pilot/pkg/security/trustdomain/bundle.go``.

The bundle is the mesh's trust domain followed by MeshConfig ``trustDomainAliases``. A principal written for
any of them, or for ``cluster.local`` (which always stands for the mesh's own), is expanded to one principal per
trust domain of the bundle, so a policy written before or after a trust-domain migration admits the same
workloads (istio.io: "Configure trust domain migration"). Principals of other trust domains, and those whose
trust domain is ``*``, are kept as they are. ``trustDomains`` values that name a trust domain of the bundle are
expanded to all of them (``ExpandTrustDomainAliases``, Istio 1.30).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["DEFAULT_TRUST_DOMAIN", "TrustDomainBundle"]

DEFAULT_TRUST_DOMAIN = "cluster.local"
"""constants.DefaultClusterLocalDomain: in a policy it stands for the mesh's own trust domain."""


def _prefix_match(text: str, pattern: str) -> bool:
    return pattern.endswith("*") and text.startswith(pattern[:-1])


def _suffix_match(text: str, pattern: str) -> bool:
    return pattern.startswith("*") and text.endswith(pattern[1:])


def _string_match(text: str, patterns: Sequence[str]) -> bool:
    """util.go stringMatch."""
    return any(text == p or p == "*" or _prefix_match(text, p) or _prefix_match(p, text) or _suffix_match(text, p)
               or _suffix_match(p, text) for p in patterns)


@dataclass(frozen=True)
class TrustDomainBundle:
    trust_domains: tuple[str, ...]
    """The mesh's trust domain first, then its aliases."""

    def replace_aliases(self, principals: Sequence[str]) -> list[str]:
        """ReplaceTrustDomainAliases."""
        out: list[str] = []
        for principal in principals:
            parts = principal.split("/")
            if len(parts) != 5 or parts[0] == "*":  # no trust domain, or any: not enforced
                out.append(principal)
                continue
            domain = parts[0]
            if _string_match(domain, self.trust_domains) or domain == DEFAULT_TRUST_DOMAIN:
                out.extend(self._replace(principal, domain))
            else:
                out.append(principal)
        return out

    def _replace(self, principal: str, domain: str) -> list[str]:
        """replaceTrustDomains: one principal per trust domain of the bundle, without repeats."""
        rest = principal.split("/")[1:]
        found: list[str] = []
        for trust_domain in self.trust_domains:
            candidate = principal if _suffix_match(trust_domain, domain) else "/".join([trust_domain, *rest])
            if candidate not in found:
                found.append(candidate)
        return found

    def expand(self, values: Sequence[str]) -> list[str]:
        """ExpandTrustDomainAliases: a value that is one of the bundle's trust domains becomes all of them."""
        out: list[str] = []
        for value in values:
            for expanded in self.trust_domains if value in self.trust_domains else (value,):
                if expanded not in out:
                    out.append(expanded)
        return out
