"""Small helpers shared by the tests: a raw WebSocket client, polling, and
the loopback-only guard for tests that run real wormhole clients."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
from websockets.sync.client import ClientConnection, connect

T = TypeVar("T")

#: Set by ci/python-bindings.sh: a missing network namespace is a failure
#: there, not a skip.
REQUIRE_NETNS = "WORMHOLE_MAILBOX_REQUIRE_NETNS"


class Client:
    """A protocol-level client: JSON messages over one WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    def send(self, **msg: Any) -> None:
        self.ws.send(json.dumps(msg))

    def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        data = self.ws.recv(timeout=timeout)
        msg = json.loads(data)
        assert isinstance(msg, dict)
        return msg

    def recv_type(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message of `type_`, skipping acks."""
        deadline = time.monotonic() + timeout
        while True:
            msg = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if msg["type"] == type_:
                return msg
            assert msg["type"] == "ack", f"expected {type_!r}, got {msg!r}"

    def bind(self, appid: str, side: str) -> None:
        self.send(type="bind", appid=appid, side=side)


@contextmanager
def client(url: str) -> Iterator[tuple[Client, dict[str, Any]]]:
    """Connects and reads the welcome; yields (client, welcome body)."""
    with connect(url, open_timeout=5, close_timeout=5) as ws:
        c = Client(ws)
        welcome = c.recv()
        assert welcome["type"] == "welcome", welcome
        yield c, welcome["welcome"]


def eventually(check: Callable[[], T], *, timeout: float = 5.0, what: str = "condition") -> T:
    """Polls `check` until it returns a truthy value (server-side effects
    such as usage rows and disconnects land asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        time.sleep(0.02)


def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def connection_refused(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
        return False


def network_interfaces() -> list[str]:
    """Interfaces of this process's network namespace (not /sys/class/net,
    which shows the namespace that mounted sysfs)."""
    return sorted(name for _, name in socket.if_nameindex())


def require_loopback_only() -> None:
    """Real wormhole clients advertise every local address as a transit
    hint; they may only run where loopback is the only interface (the
    private network namespace of ci/python-bindings.sh)."""
    interfaces = network_interfaces()
    if interfaces == ["lo"]:
        return
    reason = (
        f"real-client tests need a network namespace with only loopback "
        f"(interfaces here: {interfaces}); run under `unshare -n`"
    )
    if os.environ.get(REQUIRE_NETNS):
        pytest.fail(reason)
    pytest.skip(reason)
