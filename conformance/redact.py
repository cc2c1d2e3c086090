"""Secrets never reach reports: what diagnostics and attachments write is scrubbed before anyone reads it.

Providers already avoid secrets (Envoy prints inline keys in its config dump as ``[redacted]``; the kind and
existing providers never read Secrets or kubeconfigs), but diagnostics also copy text meshconf does not
control: process logs, pod logs, ``kind export logs``. So every file meshconf writes under ``--out`` goes
through :func:`redact_text`, which replaces

- PEM private key blocks (``-----BEGIN ... PRIVATE KEY-----`` ... ``-----END ... PRIVATE KEY-----``);
- base64 text that decodes to a PEM private key (a kubeconfig's ``client-key-data``, a Secret's data);
- kubeconfig and config credentials: ``client-key-data``, ``token``, ``id-token``, ``refresh-token``,
  ``access-token``, ``password`` values (YAML ``key: value`` or JSON ``"key": "value"``);
- HTTP credentials: ``Authorization`` / ``Proxy-Authorization`` values (``Bearer ...``, ``Basic ...``).

Binary files (a NUL byte in their first 8 KB: PNG plots, archives) are left alone.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
from collections.abc import Iterable
from pathlib import Path

__all__ = ["REDACTED", "redact_text", "redact_tree"]

REDACTED = "[redacted by meshconf]"

_PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", re.DOTALL)
_CREDENTIAL_FIELD = re.compile(
    r"""(?P<key>["']?(?:client-key-data|token|id-token|refresh-token|access-token|password)["']?\s*[:=]\s*)"""
    r"""(?P<quote>["']?)(?P<value>(?!\[redacted)[^\s"',}]+)""", re.IGNORECASE)
_AUTHORIZATION = re.compile(
    r"""(?P<key>(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:bearer|basic)\s+)(?P<value>[A-Za-z0-9._~+/=-]+)""",
    re.IGNORECASE)
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{96,}={0,2}")
_MAX_BYTES = 64 * 1024 * 1024


def redact_text(text: str) -> tuple[str, int]:
    """``text`` with every secret replaced, and how many were."""
    count = 0

    def replace(pattern: re.Pattern[str], repl: str | None, value: str) -> str:
        nonlocal count

        def sub(match: re.Match[str]) -> str:
            nonlocal count
            count += 1
            if repl is None:
                return f"{match['key']}{match.groupdict().get('quote') or ''}{REDACTED}"
            return repl

        return pattern.sub(sub, value)

    lowered = text.lower()  # the patterns are slow on big files: only run those whose words are there
    if "private key-----" in lowered:
        text = replace(_PEM_KEY, f"[private key {REDACTED.strip('[]')}]", text)
    if "authorization" in lowered:
        text = replace(_AUTHORIZATION, None, text)
    if any(word in lowered for word in ("client-key-data", "token", "password")):
        text = replace(_CREDENTIAL_FIELD, None, text)

    def encoded_key(match: re.Match[str]) -> str:
        nonlocal count
        blob = match.group(0)
        try:
            decoded = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        except (binascii.Error, ValueError):
            return blob
        if b"PRIVATE KEY-----" in decoded:
            count += 1
            return REDACTED
        return blob

    text = _BASE64_RUN.sub(encoded_key, text)
    return text, count


def redact_tree(paths: Iterable[Path]) -> int:
    """Redact every text file at or under ``paths`` in place; returns how many secrets were replaced."""
    total = 0
    for root in paths:
        files = [root] if root.is_file() else [Path(d) / f for d, _, names in os.walk(root) for f in names]
        for path in files:
            total += _redact_file(path)
    return total


def _redact_file(path: Path) -> int:
    if path.is_symlink() or not path.is_file():
        return 0  # never follow a link out of the output directory
    try:
        if path.stat().st_size > _MAX_BYTES:
            return 0
        data = path.read_bytes()
    except OSError:
        return 0
    if b"\0" in data[:8192]:
        return 0
    text = data.decode("utf-8", errors="surrogateescape")
    redacted, count = redact_text(text)
    if count:
        with contextlib.suppress(OSError):
            path.write_bytes(redacted.encode("utf-8", errors="surrogateescape"))
    return count
