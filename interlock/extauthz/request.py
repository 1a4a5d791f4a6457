"""Request -> one `AuthzRequest`, whichever door it came in by (gRPC Check or HTTP).

The gRPC bytes are parsed here, not by grpc: a CheckRequest that protobuf refuses (a
string field that is not UTF-8, a truncated message) must become a denial with a reason,
never a gRPC error. Anything that cannot be read is recorded in `undecodable`, and the
authorizer denies it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envoy.service.auth.v3 import external_auth_pb2
from google.protobuf.message import DecodeError


@dataclass(frozen=True)
class AuthzRequest:
    method: str
    path: str
    """Raw, with query (and fragment, if the client sent one)."""
    host: str
    headers: Mapping[str, str] = field(default_factory=dict)
    """Lower-case names."""
    body: bytes = b""
    scheme: str = "http"
    protocol: str = "HTTP/1.1"
    source_address: str = ""
    source_port: int = 0
    source_principal: str = ""
    destination_principal: str = ""
    request_id: str = ""
    check: Any = None
    """The parsed CheckRequest, when the request came over gRPC (OPA-Envoy mode uses its
    protojson form as `input.attributes`)."""
    undecodable: str | None = None


def _headers(http: Any) -> tuple[dict[str, str], str | None]:
    """Repeated names joined with `,` as Envoy joins them in `headers`. The values are
    gathered first and joined once: joining as they came was quadratic, and 40,000
    repeats of one name (8 MB) held the event loop, so every other Check, for 12 s."""
    values: dict[str, list[str]] = {}
    for k, v in http.headers.items():
        values.setdefault(k.lower(), []).append(v)
    bad = None
    for hv in http.header_map.headers:
        # Envoy's `encode_raw_headers` sends values as bytes: they must still be UTF-8.
        try:
            value = hv.raw_value.decode("utf-8") if hv.raw_value else hv.value
        except UnicodeDecodeError:
            bad = f"header {hv.key!r} is not UTF-8"
            break
        values.setdefault(hv.key.lower(), []).append(value)
    return {name: ",".join(vs) for name, vs in values.items()}, bad


def from_check_bytes(raw: bytes) -> AuthzRequest:
    check = external_auth_pb2.CheckRequest()
    try:
        check.ParseFromString(raw)
    except (DecodeError, ValueError) as exc:
        return AuthzRequest("", "", "", undecodable=f"unreadable CheckRequest: {exc}"[:300])
    attrs = check.attributes
    http = attrs.request.http
    headers, bad = _headers(http)
    body = http.raw_body if http.raw_body else http.body.encode("utf-8")
    src = attrs.source.address.socket_address
    return AuthzRequest(
        method=http.method,
        path=http.path,
        host=http.host,
        headers=headers,
        body=body,
        scheme=http.scheme or "http",
        protocol=http.protocol or "HTTP/1.1",
        source_address=src.address,
        source_port=src.port_value,
        source_principal=attrs.source.principal,
        destination_principal=attrs.destination.principal,
        request_id=http.id,
        check=check,
        undecodable=bad,
    )
