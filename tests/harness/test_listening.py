"""The fixtures' ports: each one distinct, and served only when a server accepts on it."""

from __future__ import annotations

import socket
import sys

import pytest

from interlock.testing import services


def test_a_port_with_a_server_listening_counts() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert services.listening(server.getsockname()[1])


def test_a_port_nobody_listens_on_does_not_count() -> None:
    assert not services.listening(services.free_port())


def test_a_connection_to_itself_does_not_count(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel can pick the port being probed as the probe's own source port; TCP's
    # simultaneous open then connects the socket to itself with no server anywhere. That
    # happens by chance in a readiness loop; here it is made to happen by binding first.
    connected: list[bool] = []

    def connect_to_itself(address: tuple[str, int], timeout: float) -> socket.socket:
        s = socket.socket()
        s.bind(address)
        s.settimeout(timeout)
        s.connect(address)
        connected.append(s.getsockname() == s.getpeername())
        return s

    monkeypatch.setattr(services.socket, "create_connection", connect_to_itself)
    assert not services.listening(services.free_port())
    assert connected == [True]  # the kernel did connect the probe, to itself


def test_ports_handed_out_are_not_handed_out_again() -> None:
    # About 14,000 ports to pick from: 300 picks would repeat one (the birthday bound)
    # if free_port took whatever the kernel returned.
    ports = [services.free_port() for _ in range(300)]
    for start in range(len(ports) - services.RECENT_PORTS + 1):
        window = ports[start : start + services.RECENT_PORTS]
        assert len(set(window)) == len(window)


def test_a_port_the_kernel_returns_again_is_not_handed_out_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    given = iter([40001, 40001, 40003])

    class Socket:
        def __enter__(self) -> Socket:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def bind(self, address: tuple[str, int]) -> None:
            self.port = next(given)

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(services.socket, "socket", Socket)
    monkeypatch.setattr(services, "_recent_ports", services.collections.deque(maxlen=8))
    assert [services.free_port(), services.free_port()] == [40001, 40003]


def test_a_server_that_never_listens_is_reported_with_what_it_said() -> None:
    # A fixture server that stays up without listening (once in CI: the OpenID provider)
    # must say why in the failure, not only that it was not ready.
    said = "cannot listen: EADDRINUSE"
    cmd = [sys.executable, "-c", f"import sys, time; print({said!r}, file=sys.stderr, "
           "flush=True); time.sleep(30)"]  # fmt: skip
    with (
        pytest.raises(services.MissingService, match="did not become ready") as failed,
        services.serving(cmd, services.free_port(), "a quiet server", limit=1.0),
    ):
        pass
    assert said in str(failed.value)


def test_a_server_is_served_only_once_it_listens_on_every_port_asked() -> None:
    with socket.socket() as first:
        first.bind(("127.0.0.1", 0))
        first.listen()
        second = services.free_port()  # nobody listens here
        cmd = [sys.executable, "-c", "import time; time.sleep(30)"]
        with (
            pytest.raises(services.MissingService, match="did not become ready"),
            services.serving(
                cmd, first.getsockname()[1], "half a server", limit=1.0, also=(second,)
            ),  # fmt: skip
        ):
            pass
