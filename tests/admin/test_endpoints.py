"""Endpoints `interlock up` prints and uses (the approvals page's own URL among them) are
URLs whatever address a listener is bound to."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from interlock.runtime import authority


@pytest.mark.parametrize(
    ("host", "port", "written"),
    [
        ("127.0.0.1", 8080, "127.0.0.1:8080"),
        ("::1", 8080, "[::1]:8080"),
        ("fe80::1", 1, "[fe80::1]:1"),
        ("[::1]", 2, "[::1]:2"),
        ("localhost", 3, "localhost:3"),
    ],
)
def test_an_ipv6_listener_is_written_in_brackets(host: str, port: int, written: str) -> None:
    # (review: `[admin] listen = "[::1]:..."` made `http://::1:PORT`, which never equals a
    # browser's Origin, so every form on the approvals page was refused)
    assert authority(host, port) == written
    url = urlsplit(f"http://{written}")
    assert (url.hostname, url.port) == (host.strip("[]"), port)
