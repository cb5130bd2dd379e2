"""Introspection after a real exchange between two protocol clients."""

from __future__ import annotations

from pathlib import Path

from helpers import client, eventually
from wormhole_mailbox import MailboxServer

APP = "example.com/introspection"


def test_exchange_then_introspect(tmp_path: Path) -> None:
    usage_db = tmp_path / "usage.sqlite"
    with MailboxServer(usage_db=usage_db) as server:
        assert server.nameplates(APP) == []
        assert server.mailboxes(APP) == {}
        assert server.connection_count() == 0
        with client(server.url) as (a, _), client(server.url) as (b, _):
            a.send(type="bind", appid=APP, side="aaaa", client_version=["python", "0.24.0"])
            b.send(type="bind", appid=APP, side="bbbb", client_version=["rust", "0.7.0"])
            a.send(type="allocate")
            nameplate = a.recv_type("allocated")["nameplate"]
            assert server.nameplates(APP) == [nameplate]
            assert server.nameplates("other.app") == []

            a.send(type="claim", nameplate=nameplate)
            mailbox = a.recv_type("claimed")["mailbox"]
            a.send(type="open", mailbox=mailbox)
            a.send(type="add", phase="pake", body="aa")
            assert a.recv_type("message")["body"] == "aa"  # echoed to the sender

            b.send(type="claim", nameplate=nameplate)
            assert b.recv_type("claimed")["mailbox"] == mailbox
            b.send(type="open", mailbox=mailbox)
            assert b.recv_type("message")["body"] == "aa"  # replayed
            b.send(type="add", phase="pake", body="bb")
            assert a.recv_type("message")["body"] == "bb"
            assert b.recv_type("message")["body"] == "bb"

            assert server.connection_count() == 2
            boxes = server.mailboxes(APP)
            assert list(boxes) == [mailbox]
            box = boxes[mailbox]
            assert box.id == mailbox
            assert box.for_nameplate
            assert not box.crowded
            assert box.side_names == ("aaaa", "bbbb")
            assert all(s.opened and s.mood is None for s in box.sides)
            assert box.message_count == 2
            assert box.updated >= max(s.added for s in box.sides)

            a.send(type="release", nameplate=nameplate)
            a.recv_type("released")
            b.send(type="release")
            b.recv_type("released")
            assert server.nameplates(APP) == []

            a.send(type="close", mailbox=mailbox, mood="happy")
            a.recv_type("closed")
            closed_side = server.mailboxes(APP)[mailbox].sides[0]
            assert (closed_side.side, closed_side.opened, closed_side.mood) == (
                "aaaa",
                False,
                "happy",
            )
            b.send(type="close", mood="happy")
            b.recv_type("closed")
            assert server.mailboxes(APP) == {}

        eventually(lambda: server.connection_count() == 0, what="clients to disconnect")

        # The usage DB records both channels (written by the commit pipeline).
        nameplate_rows = eventually(
            lambda: server.usage_rows("nameplates"), what="a nameplate usage row"
        )
        assert [(r["app_id"], r["result"]) for r in nameplate_rows] == [(APP, "happy")]
        mailbox_rows = eventually(lambda: server.usage_rows("mailboxes"), what="a mailbox usage row")
        assert [(r["app_id"], r["for_nameplate"], r["result"]) for r in mailbox_rows] == [
            (APP, 1, "happy")
        ]
        versions = server.usage_rows("client_versions")
        assert sorted((r["implementation"], r["version"]) for r in versions) == [
            ("python", "0.24.0"),
            ("rust", "0.7.0"),
        ]
        assert isinstance(server.usage_rows("current"), list)

    # Introspection still answers after stop().
    assert server.nameplates(APP) == []
    assert server.usage_rows("nameplates")
