"""The link between kind clusters: delay (``tc netem``) and partitions (``iptables``) inside the node containers.

Every node of a cluster shapes what it sends to every other cluster (one ``prio`` band with its own ``netem``
per other cluster), so the round trip between two clusters is the sum of both sides' delays: half the RTT on
each. What a node sends "to another cluster" is matched by destination: that cluster's node addresses, pod
subnet, service subnet and MetalLB slice. All four are needed: on one network pods call pods directly and
kindnet masquerades only on the way out, so a request leaves for a pod IP and its reply comes back to a node
IP; across networks the request goes to the other cluster's east-west gateway (a MetalLB address).

The root ``prio`` qdisc keeps Linux's default priomap for bands 1-3, so traffic that no filter matches keeps
its usual queueing and never meets a ``netem`` (tc-prio(8): with more bands the priomap must be given).
All commands are argv for ``docker exec <node> ...``; the plan prints them and the faults run the same ones.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEVICE", "band_of", "change_delay", "heal", "partition", "shape"]

DEVICE = "eth0"
"""A kind node's interface on the docker ``kind`` network."""
_PRIOMAP = ("1", "2", "2", "2", "1", "2", "0", "0", "1", "1", "1", "1", "1", "1", "1", "1")  # tc-prio's default
_NETEM_LIMIT = "10000"  # packets queued in the delay line; netem's default (1000) drops under load at tens of ms
_COMMENT = "meshconf-partition"


def band_of(others: Sequence[str], other: str) -> int:
    """The prio band (1-based, after the three default ones) that holds traffic to ``other``."""
    return 4 + list(others).index(other)


def _handle(band: int) -> str:
    return f"{band}0:"


def _delay(delay_ms: float) -> str:
    return f"{delay_ms:g}ms"


def shape(others: Sequence[str], delays_ms: Sequence[float], targets: Sequence[Sequence[str]],
          device: str = DEVICE) -> list[tuple[tuple[str, ...], bool]]:
    """(argv, ignore_failure) that set one node up: delay ``delays_ms[i]`` towards ``targets[i]`` (the CIDRs of
    ``others[i]``). The first command removes what an earlier run left (it fails when there is nothing)."""
    bands = 3 + len(others)
    commands: list[tuple[tuple[str, ...], bool]] = [
        (("tc", "qdisc", "del", "dev", device, "root"), True),
        (("tc", "qdisc", "add", "dev", device, "root", "handle", "1:", "prio", "bands", str(bands), "priomap",
          *_PRIOMAP), False),
    ]
    for other, delay_ms, cidrs in zip(others, delays_ms, targets, strict=True):
        band = band_of(others, other)
        commands.append((("tc", "qdisc", "add", "dev", device, "parent", f"1:{band}", "handle", _handle(band),
                          "netem", "delay", _delay(delay_ms), "limit", _NETEM_LIMIT), False))
        commands += [(("tc", "filter", "add", "dev", device, "parent", "1:0", "protocol", "ip", "prio", "1", "u32",
                       "match", "ip", "dst", cidr, "flowid", f"1:{band}"), False) for cidr in cidrs]
    return commands


def change_delay(others: Sequence[str], other: str, delay_ms: float) -> tuple[str, ...]:
    """Change the delay towards ``other`` on a node set up by :func:`shape`."""
    band = band_of(others, other)
    return ("tc", "qdisc", "change", "dev", DEVICE, "parent", f"1:{band}", "handle", _handle(band), "netem",
            "delay", _delay(delay_ms), "limit", _NETEM_LIMIT)


def partition(targets: Sequence[str]) -> list[tuple[str, ...]]:
    """Drop everything a node sends or forwards to ``targets``."""
    return [("iptables", "-I", chain, "-d", cidr, "-m", "comment", "--comment", _COMMENT, "-j", "DROP")
            for cidr in targets for chain in ("FORWARD", "OUTPUT")]


def heal(targets: Sequence[str]) -> list[tuple[str, ...]]:
    """Remove the rules :func:`partition` inserted."""
    return [("iptables", "-D", chain, "-d", cidr, "-m", "comment", "--comment", _COMMENT, "-j", "DROP")
            for cidr in targets for chain in ("FORWARD", "OUTPUT")]
