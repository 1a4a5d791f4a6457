"""Checkpoints signed by an OpenBao/Vault transit key: the signing key never leaves OpenBao.

The transit engine signs with an Ed25519 key it holds (`POST <mount>/sign/<key>`,
answering `vault:v<version>:<base64 signature>`) and publishes its public half
(`GET <mount>/keys/<key>`). The verifier key is read once at start-up and pinned with its
version: a signature from another version (the key was rotated) is refused, as is one that
does not verify under the pinned key, so a checkpoint is never stored under a key the
auditor was not given. A host that holds only a token for `sign` cannot export the key,
and losing OpenBao means no new checkpoints (logged), never unsigned ones.
"""

from __future__ import annotations

import base64
import binascii
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from interlock.audit.checkpoint import DASH, Verifier
from interlock.config import AuditTransitConfig
from interlock.errors import AuditError


class TransitSigner:
    """A `NoteSigner` whose key lives in OpenBao transit."""

    def __init__(self, name: str, config: AuditTransitConfig) -> None:
        self.name = name
        self.config = config
        self._token = (
            config.token
            if config.token
            else Path(config.token_file or "").read_text("utf-8").strip()
        )
        self._base = f"{config.address.rstrip('/')}/v1/{config.mount}"
        self.version, public = self._public_key()
        self.verifier = Verifier(name, public)

    def _public_key(self) -> tuple[int, bytes]:
        """The latest version of the key and its public half (blocking: once, at start)."""
        req = urllib.request.Request(  # noqa: S310 (the address is validated https or loopback)
            f"{self._base}/keys/{self.config.key}", headers={"X-Vault-Token": self._token}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.config.timeout) as resp:  # noqa: S310
                data = json.load(resp)["data"]
            if data.get("type") != "ed25519":
                raise AuditError(f"transit key {self.config.key} is not an ed25519 key")
            version = int(data["latest_version"])
            public = base64.b64decode(data["keys"][str(version)]["public_key"], validate=True)
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"transit key {self.config.key}: {_why(exc)}") from None
        if len(public) != 32:
            raise AuditError(f"transit key {self.config.key}: not a 32-byte Ed25519 key")
        return version, public

    async def sign_note(self, text: str) -> str:
        """The signed note: OpenBao signs `text`; the signature is checked here first."""
        body = {"input": base64.b64encode(text.encode()).decode()}
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    f"{self._base}/sign/{self.config.key}",
                    json=body,
                    headers={"X-Vault-Token": self._token},
                ) as resp,
            ):
                doc: Any = await resp.json(content_type=None)
                if resp.status != 200:
                    raise AuditError(f"transit sign refused: {resp.status} {_errors(doc)}")
            _, version, sig64 = str(doc["data"]["signature"]).split(":", 2)
            sig = base64.b64decode(sig64, validate=True)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            raise AuditError(f"transit sign failed: {_why(exc)}") from None
        if version != f"v{self.version}":
            raise AuditError(
                f"transit signed with key version {version}, not the pinned v{self.version} "
                "(rotated? restart to publish the new verifier key)"
            )
        try:
            Ed25519PublicKey.from_public_bytes(self.verifier.public).verify(sig, text.encode())
        except InvalidSignature:
            raise AuditError("transit signature does not verify under its public key") from None
        blob = base64.b64encode(self.verifier.id + sig).decode()
        return f"{text}\n{DASH}{self.name} {blob}\n"


def _errors(doc: Any) -> str:
    return "; ".join(doc.get("errors", [])) if isinstance(doc, dict) else ""


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"OpenBao answered {exc.code}"
    if isinstance(exc, urllib.error.URLError | OSError | aiohttp.ClientError | TimeoutError):
        return "OpenBao unreachable"
    if isinstance(exc, binascii.Error):
        return "malformed key or signature"
    return f"unexpected answer ({type(exc).__name__})"
