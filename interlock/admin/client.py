"""`interlock agents ...`: a small client of the admin API (it never touches state itself,
so it sees and changes what the running instance sees)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from interlock.config import Config
from interlock.errors import UsageError

TOKEN_ENV = "INTERLOCK_ADMIN_TOKEN"  # noqa: S105 (an environment variable name)


def endpoint(config: Config) -> tuple[str, str]:
    """(base URL, token) of the admin API the config describes."""
    if config.admin is None:
        raise UsageError("the config has no [admin] section")
    host, _, port = config.admin.listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (reading, not binding)
        host = "127.0.0.1"
    token = os.environ.get(TOKEN_ENV) or config.admin.token
    if not token:
        path = config.data_dir / "admin.token"
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise UsageError(
                f"no admin token: set {TOKEN_ENV}, [admin] token, or start interlock once "
                f"to create {path} ({exc.strerror})"
            ) from None
    return f"http://{host}:{port}", token


def call(config: Config, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    base, token = endpoint(config)
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 (the configured loopback admin URL)
        base + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:  # noqa: S310
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("error", "")
        except ValueError:
            detail = ""
        raise UsageError(f"admin API: {exc.code} {detail}".strip()) from None
    except OSError as exc:
        raise UsageError(f"admin API at {base} unreachable: {exc}") from None
