"""Starting, stopping and argument checking of MailboxServer."""

from __future__ import annotations

import asyncio
import datetime
import errno
import gc
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed

from helpers import client, connection_refused, eventually, unused_port
from wormhole_mailbox import MailboxServer, ServerError

URL_RE = re.compile(r"^ws://127\.0\.0\.1:(\d+)/v1$")


def test_start_returns_once_listening() -> None:
    server = MailboxServer()
    returned = server.start()
    try:
        assert returned is server
        assert server.running
        match = URL_RE.match(server.url)
        assert match, server.url
        assert int(match.group(1)) == server.port > 0
        assert server.host == "127.0.0.1"
        # Listening already: a plain connect succeeds at once.
        with socket.create_connection(("127.0.0.1", server.port), timeout=2):
            pass
        with client(server.url) as (_, welcome):
            assert "your-address" in welcome
    finally:
        server.stop()
    assert not server.running


def test_start_stop_many_times() -> None:
    ports = set()
    for _ in range(25):
        with MailboxServer() as server:
            ports.add(server.port)
            with client(server.url):
                pass
        assert connection_refused(server.port)
    assert len(ports) > 1


def test_same_object_restarts() -> None:
    server = MailboxServer()
    try:
        for _ in range(5):
            server.start()
            with client(server.url):
                pass
            server.stop()
            assert not server.running
    finally:
        server.stop()


def test_two_servers_at_once() -> None:
    with MailboxServer() as a, MailboxServer(motd="b") as b:
        assert a.port != b.port
        with client(a.url) as (ca, wa), client(b.url) as (cb, wb):
            assert "motd" not in wa
            assert wb["motd"] == "b"
            ca.bind("app", "side-a")
            ca.send(type="allocate")
            nameplate = ca.recv_type("allocated")["nameplate"]
            assert a.nameplates("app") == [nameplate]
            assert b.nameplates("app") == []
            assert a.connection_count() == 1
            assert b.connection_count() == 1


def test_stop_while_clients_connected() -> None:
    server = MailboxServer().start()
    port = server.port
    with client(server.url) as (c1, _), client(server.url) as (c2, _):
        c1.bind("app", "one")
        c1.send(type="allocate")
        c1.recv_type("allocated")
        c2.bind("app", "two")
        eventually(lambda: server.connection_count() == 2, what="two connections")
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        for c in (c1, c2):
            with pytest.raises(ConnectionClosed):
                while True:
                    c.recv(timeout=5)
    assert connection_refused(port)
    # The port is free again at once.
    with MailboxServer(port=port) as again:
        assert again.port == port


def test_stop_is_idempotent() -> None:
    server = MailboxServer()
    server.stop()  # never started: nothing to do
    server.start()
    server.stop()
    server.stop()
    with server:
        pass
    server.stop()


def test_context_manager_stops_on_error() -> None:
    with pytest.raises(KeyError):
        with MailboxServer() as server:
            port = server.port
            raise KeyError("boom")
    assert not server.running
    assert connection_refused(port)


def test_garbage_collection_stops_the_server() -> None:
    server = MailboxServer().start()
    port = server.port
    with client(server.url):
        pass
    del server
    gc.collect()
    assert eventually(lambda: connection_refused(port), what="port closed")


def test_native_object_stops_on_drop() -> None:
    from wormhole_mailbox import _native

    native = _native.MailboxServer()
    native.start()
    port = native.port
    assert port is not None
    del native
    gc.collect()
    assert eventually(lambda: connection_refused(port), what="port closed")


def test_port_in_use_by_another_server() -> None:
    with MailboxServer() as first:
        second = MailboxServer(port=first.port)
        with pytest.raises(OSError) as info:
            second.start()
        assert info.value.errno == errno.EADDRINUSE
        assert str(first.port) in str(info.value)
        assert not second.running
        with pytest.raises(RuntimeError, match="not been started"):
            _ = second.url


def test_port_in_use_by_a_plain_socket() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError) as info:
            MailboxServer(port=port).start()
        assert info.value.errno == errno.EADDRINUSE


def test_fixed_port() -> None:
    port = unused_port()
    with MailboxServer(port=port) as server:
        assert server.port == port
        assert server.url == f"ws://127.0.0.1:{port}/v1"


def test_ipv6_loopback_url() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        server = MailboxServer(host="::1").start()
    except OSError as e:
        pytest.skip(f"no IPv6 loopback here: {e}")
    with server:
        assert server.url == f"ws://[::1]:{server.port}/v1"
        with client(server.url):
            pass


def test_not_started() -> None:
    server = MailboxServer()
    assert not server.running
    assert "not started" in repr(server)
    for attribute in ("url", "port", "host"):
        with pytest.raises(RuntimeError, match="not been started"):
            getattr(server, attribute)
    with pytest.raises(RuntimeError, match="not been started"):
        server.nameplates("app")
    with pytest.raises(RuntimeError, match="not been started"):
        server.connection_count()


def test_start_twice_is_an_error() -> None:
    with MailboxServer() as server:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()


def test_channel_db_survives_restart(tmp_path: Path) -> None:
    db = tmp_path / "channel.sqlite"
    server = MailboxServer(channel_db=db)
    with server:
        with client(server.url) as (c, _):
            c.bind("app", "side")
            c.send(type="allocate")
            nameplate = c.recv_type("allocated")["nameplate"]
            c.send(type="claim", nameplate=nameplate)
            c.recv_type("claimed")
    assert db.exists()
    with server:  # restarted: a fresh server over the same database
        assert server.nameplates("app") == [nameplate]


def test_unopenable_channel_db_raises_server_error(tmp_path: Path) -> None:
    server = MailboxServer(channel_db=tmp_path / "missing-dir" / "db.sqlite")
    with pytest.raises(ServerError, match="databases"):
        server.start()
    assert not server.running
    assert isinstance(ServerError("x"), RuntimeError)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"port": -1}, ValueError, "port"),
        ({"port": 65536}, ValueError, "port"),
        ({"port": "8080"}, TypeError, "port"),
        ({"port": True}, TypeError, "port"),
        ({"port": None}, TypeError, "port"),
        ({"host": ""}, ValueError, "host"),
        ({"host": 127}, TypeError, "host"),
        ({"motd": 1}, TypeError, "motd"),
        ({"advertise_version": b"1"}, TypeError, "advertise_version"),
        ({"signal_error": ["x"]}, TypeError, "signal_error"),
        ({"disallow_list": 1}, TypeError, "disallow_list"),
        ({"channel_db": ""}, ValueError, "channel_db"),
        ({"channel_db": 3}, TypeError, "channel_db"),
        ({"usage_db": b"/tmp/x"}, TypeError, "usage_db"),
        ({"blur_usage": 0}, ValueError, "blur_usage"),
        ({"blur_usage": 1.5}, TypeError, "blur_usage"),
        ({"prune_interval": 0}, ValueError, "prune_interval"),
        ({"prune_interval": "1"}, TypeError, "prune_interval"),
        ({"ping_interval": float("nan")}, ValueError, "ping_interval"),
        ({"ping_timeout": -1}, ValueError, "ping_timeout"),
        ({"channel_expiration": -0.5}, ValueError, "channel_expiration"),
        ({"channel_expiration": float("inf")}, ValueError, "channel_expiration"),
        ({"handshake_timeout": 1e300}, ValueError, "handshake_timeout"),
        ({"durability": "sometimes"}, ValueError, "durability"),
        ({"max_message_size": 0}, ValueError, "max_message_size"),
        ({"max_connections": -3}, ValueError, "max_connections"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
    ],
)
def test_bad_arguments(options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        MailboxServer(**options)


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        MailboxServer("127.0.0.1", 0)  # type: ignore[call-arg]


def test_good_arguments() -> None:
    server = MailboxServer(
        channel_expiration=0,
        prune_interval=datetime.timedelta(minutes=1),
        ping_interval=0.5,
        ping_timeout=30,
        blur_usage=3600,
        durability="power-loss",
        max_message_size=4096,
        max_connections=10,
        handshake_timeout=2,
    )
    with server:
        with client(server.url):
            pass


def test_unknown_usage_table(tmp_path: Path) -> None:
    with MailboxServer(usage_db=tmp_path / "usage.sqlite") as server:
        with pytest.raises(ValueError, match="unknown usage table"):
            server.usage_rows("secrets")
    with MailboxServer() as server:
        with pytest.raises(RuntimeError, match="usage_db"):
            server.usage_rows("nameplates")


def test_stop_releases_the_interpreter() -> None:
    """stop() blocks while a client that ignores the close handshake holds
    it up; a Python thread keeps running meanwhile (the GIL is released)."""
    server = MailboxServer().start()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as stalled:
        stalled.sendall(
            (
                f"GET /v1 HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        assert stalled.recv(4096).startswith(b"HTTP/1.1 101")
        eventually(lambda: server.connection_count() == 1, what="the stalled client")
        ticks = 0
        done = threading.Event()

        def tick() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                time.sleep(0.001)

        thread = threading.Thread(target=tick)
        thread.start()
        time.sleep(0.05)
        before = ticks
        started = time.monotonic()
        server.stop()
        elapsed = time.monotonic() - started
        during = ticks - before
        done.set()
        thread.join()
    # Holding the GIL would allow at most a tick or two.
    if elapsed >= 0.1:
        assert during >= 5, f"{during} ticks in {elapsed:.2f}s of stop()"


def test_inside_a_running_asyncio_loop() -> None:
    """The server never touches the caller's loop: start, talk and stop
    from inside a coroutine, and the loop keeps working."""

    async def main() -> dict[str, Any]:
        server = MailboxServer(motd="async").start()
        try:
            async with async_connect(server.url) as ws:
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await asyncio.sleep(0)
            return dict(welcome)
        finally:
            server.stop()

    welcome = asyncio.run(main())
    assert welcome["welcome"]["motd"] == "async"


def test_interpreter_exits_with_a_running_server(tmp_path: Path) -> None:
    """A server left running doesn't hang interpreter exit, and its channel
    database is committed by then (stopped at exit)."""
    db = tmp_path / "channel.sqlite"
    script = f"""
import json
from websockets.sync.client import connect
from wormhole_mailbox import MailboxServer

server = MailboxServer(channel_db={str(db)!r}).start()
with connect(server.url) as ws:
    ws.recv()
    ws.send(json.dumps({{"type": "bind", "appid": "app", "side": "s"}}))
    ws.send(json.dumps({{"type": "allocate"}}))
    while json.loads(ws.recv())["type"] != "allocated":
        pass
    ws.send(json.dumps({{"type": "claim", "nameplate": server.nameplates("app")[0]}}))
    while json.loads(ws.recv())["type"] != "claimed":
        pass
print(server.nameplates("app")[0])
# no stop(): left to interpreter exit
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    nameplate = result.stdout.strip()
    with MailboxServer(channel_db=db) as again:
        assert again.nameplates("app") == [nameplate]
