"""A real client, the pinned magic-wormhole 0.24.0, through `mailbox_url`.

By default that is our in-process server (and the tests also check it with
introspection); test_reference_server.py runs this same file with
`--mailbox-url` pointed at the pinned Python server. The CLI tests make
real transit connections, so they need the loopback-only network namespace
(`loopback_only`).
"""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
import pytest_twisted

from helpers import eventually, unused_port
from wormhole_mailbox import MailboxServer
from wormhole_mailbox.pytest_plugin import external_url

CLI_APPID = "lothar.com/wormhole/text-or-file-xfer"
LIB_APPID = "example.com/wormhole-mailbox/library-test"
TIMEOUT = 60


@pytest.fixture
def our_server(request: pytest.FixtureRequest, mailbox_url: str) -> Optional[MailboxServer]:
    """The in-process server behind `mailbox_url`, or None if external."""
    if external_url(request.config) is not None:
        return None
    server: MailboxServer = request.getfixturevalue("mailbox_server")
    return server


def wormhole_cli(relay_url: str) -> list[str]:
    """The `wormhole` command of this interpreter's environment, with the
    relay and a transit helper on an unused loopback port (refused at once,
    so the clients connect directly over loopback)."""
    exe = Path(sys.executable).with_name("wormhole")
    return [
        str(exe),
        "--relay-url",
        relay_url,
        "--transit-helper",
        f"tcp:127.0.0.1:{unused_port()}",
    ]


class Sender:
    """`wormhole send` in the background; `.code` is the code it printed."""

    def __init__(self, relay_url: str, args: list[str]) -> None:
        self.lines: queue.Queue[Optional[str]] = queue.Queue()
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [*wormhole_cli(relay_url), "send", "--hide-progress", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.code = self._wait_for_code()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _wait_for_code(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=TIMEOUT)
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(f"no code from wormhole send: {self.output}") from None
            if line is None:
                raise AssertionError(f"wormhole send ended without a code: {self.output}")
            self.output.append(line)
            match = re.search(r"Wormhole code is: (\S+)", line)
            if match:
                return match.group(1)

    def finish(self) -> str:
        try:
            rc = self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        self._close()
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.output.append(line)
        text = "".join(self.output)
        assert rc == 0, f"wormhole send failed ({rc}):\n{text}"
        return text

    def _close(self) -> None:
        self.reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close()


@pytest.fixture
def sender_cleanup() -> Iterator[list[Sender]]:
    senders: list[Sender] = []
    yield senders
    for s in senders:
        s.kill()


def receive(relay_url: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [*wormhole_cli(relay_url), "receive", "--hide-progress", *args, code],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 0, f"wormhole receive failed:\n{result.stdout}\n{result.stderr}"
    return result


def nameplate_of(code: str) -> str:
    return code.split("-", 1)[0]


@pytest.mark.usefixtures("loopback_only")
def test_cli_sends_text(
    mailbox_url: str, our_server: Optional[MailboxServer], sender_cleanup: list[Sender]
) -> None:
    text = "hi from the fixture"
    sender = Sender(mailbox_url, ["--text", text])
    sender_cleanup.append(sender)
    nameplate = nameplate_of(sender.code)
    if our_server is not None:
        assert nameplate in our_server.nameplates(CLI_APPID)
    result = receive(mailbox_url, sender.code)
    assert result.stdout.strip() == text
    assert "text message sent" in sender.finish()
    if our_server is not None:
        eventually(
            lambda: nameplate not in our_server.nameplates(CLI_APPID),
            what="the nameplate to be released",
        )


@pytest.mark.usefixtures("loopback_only")
def test_cli_sends_a_file(
    mailbox_url: str,
    our_server: Optional[MailboxServer],
    sender_cleanup: list[Sender],
    tmp_path: Path,
) -> None:
    payload = os.urandom(200_000)
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    target = tmp_path / "received.bin"
    sender = Sender(mailbox_url, [str(source)])
    sender_cleanup.append(sender)
    if our_server is not None:
        assert nameplate_of(sender.code) in our_server.nameplates(CLI_APPID)
    receive(mailbox_url, sender.code, "--accept-file", "--output-file", str(target))
    assert "Transfer complete" in sender.finish()
    assert target.read_bytes() == payload
    if our_server is not None:
        eventually(
            lambda: our_server.mailboxes(CLI_APPID) == {},
            what="the mailbox to be closed",
        )


@pytest_twisted.inlineCallbacks  # type: ignore[untyped-decorator]
def test_library_exchange(mailbox_url: str, our_server: Optional[MailboxServer]) -> Any:
    """Two wormholes of the library, inside Twisted's reactor (with
    pytest-twisted), exchange messages through the server."""
    import wormhole
    from twisted.internet import reactor

    w1 = wormhole.create(LIB_APPID, mailbox_url, reactor)
    w2 = wormhole.create(LIB_APPID, mailbox_url, reactor)
    try:
        w1.allocate_code()
        code = yield w1.get_code()
        if our_server is not None:
            assert our_server.nameplates(LIB_APPID) == [nameplate_of(code)]
        w2.set_code(code)
        w1.send_message(b"ping")
        assert (yield w2.get_message()) == b"ping"
        w2.send_message(b"pong")
        assert (yield w1.get_message()) == b"pong"
        if our_server is not None:
            (box,) = our_server.mailboxes(LIB_APPID).values()
            assert len(box.sides) == 2
            assert our_server.connection_count() >= 2
    finally:
        yield w1.close()
        yield w2.close()
    if our_server is not None:
        assert our_server.nameplates(LIB_APPID) == []
        assert our_server.mailboxes(LIB_APPID) == {}
