"""Server options reach the wire: the welcome message and `list`."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed

from helpers import client
from wormhole_mailbox import MailboxServer
from wormhole_mailbox.pytest_plugin import MailboxServerFactory


@pytest.mark.parametrize(
    ("options", "expected", "absent"),
    [
        ({}, {}, ["motd", "current_cli_version", "error"]),
        ({"motd": "Welcome, tester"}, {"motd": "Welcome, tester"}, ["error"]),
        ({"motd": ""}, {"motd": ""}, []),
        ({"advertise_version": "0.24.0"}, {"current_cli_version": "0.24.0"}, ["motd"]),
        ({"signal_error": "go away"}, {"error": "go away"}, ["motd"]),
        (
            {"motd": "m", "advertise_version": "9.9", "signal_error": "e"},
            {"motd": "m", "current_cli_version": "9.9", "error": "e"},
            [],
        ),
    ],
)
def test_welcome(
    make_mailbox_server: MailboxServerFactory,
    options: dict[str, Any],
    expected: dict[str, Any],
    absent: list[str],
) -> None:
    server = make_mailbox_server(**options)
    with client(server.url) as (_, welcome):
        for key, value in expected.items():
            assert welcome[key] == value
        for key in absent:
            assert key not in welcome
        assert welcome["your-address"]["ipv4"] == "127.0.0.1"


@pytest.mark.parametrize("disallow_list", [False, True])
def test_disallow_list(make_mailbox_server: MailboxServerFactory, disallow_list: bool) -> None:
    server = make_mailbox_server(disallow_list=disallow_list)
    with client(server.url) as (c, _):
        c.bind("app", "side")
        c.send(type="allocate")
        nameplate = c.recv_type("allocated")["nameplate"]
        c.send(type="list")
        listed = [n["id"] for n in c.recv_type("nameplates")["nameplates"]]
    assert listed == ([] if disallow_list else [nameplate])
    assert server.nameplates("app") == [nameplate]


def test_max_message_size(make_mailbox_server: MailboxServerFactory) -> None:
    server = make_mailbox_server(max_message_size=1024)
    with client(server.url) as (c, _):
        c.bind("app", "side")
        c.send(type="open", mailbox="mb1")
        c.send(type="add", phase="p", body="00" * 2048)
        with pytest.raises(ConnectionClosed):
            while True:
                c.recv(timeout=5)
