"""An in-process Magic Wormhole mailbox server, for tests.

The server is the Rust reference server (wire-compatible with the Python
``magic-wormhole-mailbox-server`` 0.8.0), running on its own threads::

    from wormhole_mailbox import MailboxServer

    with MailboxServer(motd="hello") as server:
        run_my_client(relay_url=server.url)
        assert server.nameplates("example.com/app") == []

Nothing here touches the caller's event loop (asyncio, Twisted or none):
``start()`` and ``stop()`` block briefly with the interpreter released.
The pytest plugin (``wormhole_mailbox.pytest_plugin``, registered
automatically) provides the ``mailbox_server``, ``mailbox_url`` and
``make_mailbox_server`` fixtures; ``wormhole_mailbox.conformance.run(url)``
checks any server against the conformance vectors.
"""

from __future__ import annotations

import atexit
import datetime
import os
import threading
import weakref
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Optional, Union

from wormhole_mailbox import _native, conformance
from wormhole_mailbox._native import ServerError

__all__ = [
    "MailboxInfo",
    "MailboxServer",
    "ServerError",
    "SideInfo",
    "__version__",
    "conformance",
]

__version__: str = _native.__version__

#: A duration: seconds as an int or float, or a ``datetime.timedelta``.
Seconds = Union[int, float, datetime.timedelta]
#: A database path.
PathArg = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class SideInfo:
    """One side (client) of a mailbox."""

    side: str
    #: False once the side has closed the mailbox.
    opened: bool
    #: When the side joined, in seconds since the epoch.
    added: float
    #: The mood it closed with (``"happy"``, ``"lonely"``, ...), if closed.
    mood: Optional[str]


@dataclass(frozen=True)
class MailboxInfo:
    """A mailbox, as introspection reports it."""

    id: str
    #: Created by claiming a nameplate (rather than opened by id).
    for_nameplate: bool
    #: A third side tried to join.
    crowded: bool
    #: Last activity, in seconds since the epoch.
    updated: float
    #: Messages stored in it (replayed to late listeners).
    message_count: int
    sides: tuple[SideInfo, ...]

    @property
    def side_names(self) -> tuple[str, ...]:
        """The sides' names, in the order they joined."""
        return tuple(s.side for s in self.sides)


def _type_name(value: object) -> str:
    return type(value).__name__


def _check_str(name: str, value: object, *, optional: bool = True) -> Optional[str]:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str{' or None' if optional else ''}, got {_type_name(value)}")
    return value


def _check_int(name: str, value: object) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {_type_name(value)}")
    return value


def _check_seconds(name: str, value: object) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds, a datetime.timedelta or None, got {_type_name(value)}"
        )
    return float(value)


def _check_path(name: str, value: object) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a str, an os.PathLike or None, got {_type_name(value)}")
    path = os.fspath(value)
    if not isinstance(path, str):
        raise TypeError(f"{name} must be a text path, got {_type_name(path)}")
    return path


# Servers still running, stopped at interpreter exit so that their
# databases are committed and their threads end cleanly.
_running: weakref.WeakSet[MailboxServer] = weakref.WeakSet()
_running_lock = threading.RLock()  # re-entrant: __del__ may run under it


@atexit.register
def _stop_all_at_exit() -> None:
    with _running_lock:
        servers = list(_running)
    for server in servers:
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - nothing to report to at exit
            pass


class MailboxServer:
    """A Magic Wormhole mailbox server running in this process.

    All arguments are keyword-only. ``channel_db=None`` keeps the channel
    state in memory; durations are seconds (int or float) or a
    ``datetime.timedelta``. Bad argument types raise ``TypeError``, bad
    values ``ValueError``; ``start()`` raises ``OSError`` (``errno`` set,
    e.g. ``errno.EADDRINUSE``) when it can't listen, and ``ServerError`` when
    the databases can't be opened.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        channel_db: Optional[PathArg] = None,
        usage_db: Optional[PathArg] = None,
        motd: Optional[str] = None,
        advertise_version: Optional[str] = None,
        signal_error: Optional[str] = None,
        disallow_list: bool = False,
        blur_usage: Optional[int] = None,
        prune_interval: Optional[Seconds] = None,
        channel_expiration: Optional[Seconds] = None,
        ping_interval: Optional[Seconds] = None,
        ping_timeout: Optional[Seconds] = None,
        durability: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_connections: Optional[int] = None,
        handshake_timeout: Optional[Seconds] = None,
    ) -> None:
        # Set first so that __del__ works even if the checks below raise.
        self._native: Optional[_native.MailboxServer] = None
        if not isinstance(disallow_list, bool):
            raise TypeError(f"disallow_list must be a bool, got {_type_name(disallow_list)}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, got {_type_name(port)}")
        self._native = _native.MailboxServer(
            host=_check_str("host", host, optional=False) or "",
            port=port,
            channel_db=_check_path("channel_db", channel_db),
            usage_db=_check_path("usage_db", usage_db),
            motd=_check_str("motd", motd),
            advertise_version=_check_str("advertise_version", advertise_version),
            signal_error=_check_str("signal_error", signal_error),
            disallow_list=disallow_list,
            blur_usage=_check_int("blur_usage", blur_usage),
            prune_interval=_check_seconds("prune_interval", prune_interval),
            channel_expiration=_check_seconds("channel_expiration", channel_expiration),
            ping_interval=_check_seconds("ping_interval", ping_interval),
            ping_timeout=_check_seconds("ping_timeout", ping_timeout),
            durability=_check_str("durability", durability),
            max_message_size=_check_int("max_message_size", max_message_size),
            max_connections=_check_int("max_connections", max_connections),
            handshake_timeout=_check_seconds("handshake_timeout", handshake_timeout),
        )

    @property
    def _server(self) -> _native.MailboxServer:
        if self._native is None:  # only after a failed __init__
            raise RuntimeError("this MailboxServer was not constructed")
        return self._native

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> MailboxServer:
        """Binds and starts serving; returns (``self``) once listening.

        A stopped server can be started again: a fresh server with the same
        options (on a new port if ``port=0``; with the state of
        ``channel_db`` if that is a file).
        """
        self._server.start()
        with _running_lock:
            _running.add(self)
        return self

    def stop(self) -> None:
        """Closes all connections and stops; does nothing if not running."""
        native = self._native
        if native is None:
            return
        try:
            native.stop()
        finally:
            with _running_lock:
                _running.discard(self)

    def __enter__(self) -> MailboxServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001 - never raise from a finalizer
            pass

    def __repr__(self) -> str:
        return repr(self._native) if self._native is not None else "<MailboxServer (invalid)>"

    # -- where -------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between ``start()`` and ``stop()``."""
        return self._native is not None and self._native.running

    @property
    def port(self) -> int:
        """The TCP port it listens (or last listened) on."""
        port = self._server.port
        if port is None:
            raise RuntimeError("the server has not been started: call start() first")
        return port

    @property
    def host(self) -> str:
        """The address it listens (or last listened) on, e.g. ``127.0.0.1``."""
        host = self._server.host
        if host is None:
            raise RuntimeError("the server has not been started: call start() first")
        return host

    @property
    def url(self) -> str:
        """The WebSocket URL for clients: ``ws://127.0.0.1:PORT/v1``."""
        url = self._server.url
        if url is None:
            raise RuntimeError("the server has not been started: call start() first")
        return url

    # -- introspection (read-only; also valid after stop()) ----------------

    def nameplates(self, app_id: str) -> list[str]:
        """The nameplates that exist now for ``app_id`` (allocated or claimed)."""
        return self._server.nameplates(_check_str("app_id", app_id, optional=False) or "")

    def mailboxes(self, app_id: str) -> dict[str, MailboxInfo]:
        """The mailboxes of ``app_id`` by id, each with its sides."""
        result: dict[str, MailboxInfo] = {}
        for mid, for_nameplate, crowded, updated, count, sides in self._server.mailboxes(
            _check_str("app_id", app_id, optional=False) or ""
        ):
            result[mid] = MailboxInfo(
                id=mid,
                for_nameplate=for_nameplate,
                crowded=crowded,
                updated=updated,
                message_count=count,
                sides=tuple(SideInfo(side=s, opened=o, added=a, mood=m) for s, o, a, m in sides),
            )
        return result

    def connection_count(self) -> int:
        """Open WebSocket connections (past the handshake)."""
        return self._server.connection_count()

    def usage_rows(self, table: str) -> list[dict[str, Any]]:
        """Rows of a usage-DB table as dicts (needs ``usage_db=PATH``).

        ``table`` is one of ``"nameplates"``, ``"mailboxes"``,
        ``"client_versions"`` and ``"current"`` (the Python server's usage
        schema v2). Rows are written as the server commits, so a row appears
        shortly after the event that caused it.
        """
        return self._server.usage_rows(_check_str("table", table, optional=False) or "")
