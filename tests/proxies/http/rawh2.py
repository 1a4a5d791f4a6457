"""A raw HTTP/2 client through the proxy's CONNECT tunnel, sending exactly the frames a
test asks for (header fields no ordinary client would send, trailers, lying lengths)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

import h2.config
import h2.connection
import h2.events

from interlock.proxies.http.server import HttpProxy
from tests.proxies.http.util import tunnel

Fields = list[tuple[bytes, bytes]]


async def h2_exchange(
    proxy: HttpProxy,
    target: str,
    headers: Fields,
    data: list[bytes] = [],  # noqa: B006 (never mutated)
    trailers: Fields | None = None,
) -> tuple[int | None, bytes, bytes | None]:
    """(status or None if the stream was reset, body, and when a GOAWAY ended the
    connection every byte of HTTP/2 the proxy sent up to its close, else None) of one
    request to `target` (`host:port`) over HTTP/2 inside a CONNECT tunnel. All bytes:
    h2 may send a GOAWAY of its own first, without the proxy's debug data."""
    reader, writer = await tunnel(proxy, target)
    try:
        ctx = ssl.create_default_context(cafile=str(proxy.ca_file))
        ctx.set_alpn_protocols(["h2"])
        await writer.start_tls(ctx, server_hostname=target.rsplit(":", 1)[0])
        config = h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
        conn = h2.connection.H2Connection(config)
        conn.initiate_connection()
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, headers, end_stream=not data and trailers is None)
        for i, chunk in enumerate(data):
            conn.send_data(sid, chunk, end_stream=i == len(data) - 1 and trailers is None)
        if trailers is not None:
            conn.send_headers(sid, trailers, end_stream=True)
        writer.write(conn.data_to_send())
        status: int | None = None
        body = received = b""
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), 15)
            if not chunk:
                return status, body, None
            received += chunk
            for event in conn.receive_data(chunk):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    with contextlib.suppress(OSError):
                        while chunk := await asyncio.wait_for(reader.read(65536), 15):
                            received += chunk
                    return status, body, received
                elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                    return status, body, None
            writer.write(conn.data_to_send())
    finally:
        with contextlib.suppress(OSError):
            writer.close()
