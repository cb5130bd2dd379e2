"""pytest fixtures for code that talks to a Magic Wormhole mailbox server.

Registered through the ``pytest11`` entry point, so installing
``wormhole-mailbox`` is enough. Fixtures:

``mailbox_server`` (session)
    One in-process :class:`~wormhole_mailbox.MailboxServer`, started once,
    with introspection (``nameplates()``, ``mailboxes()``, ...).
``mailbox_url`` (session)
    The relay URL to test against: ``--mailbox-url URL`` or the
    ``WORMHOLE_MAILBOX_URL`` environment variable if given (an external
    server, e.g. the Python reference server), else ``mailbox_server.url``.
    Our server is only started if it is needed.
``make_mailbox_server`` (function)
    A factory: ``make_mailbox_server(motd="hi")`` returns a started server
    with those options; all of them are stopped when the test ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Optional, Protocol

import pytest

from wormhole_mailbox import MailboxServer

__all__ = [
    "ENV_VAR",
    "MailboxServerFactory",
    "external_url",
    "mailbox_server",
    "mailbox_url",
    "make_mailbox_server",
]

#: Environment variable naming an external server (like ``--mailbox-url``).
ENV_VAR = "WORMHOLE_MAILBOX_URL"


class MailboxServerFactory(Protocol):
    """The type of the ``make_mailbox_server`` fixture."""

    def __call__(self, **options: Any) -> MailboxServer: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wormhole-mailbox", "Magic Wormhole mailbox server")
    group.addoption(
        "--mailbox-url",
        action="store",
        dest="mailbox_url",
        default=None,
        metavar="URL",
        help=(
            "run tests that use the mailbox_url fixture against the mailbox "
            f"server at URL (ws://HOST:PORT/v1) instead of an in-process one; "
            f"default: ${ENV_VAR} if set"
        ),
    )


def external_url(config: pytest.Config) -> Optional[str]:
    """The external server's URL from ``--mailbox-url`` or the environment
    variable, or None when ``mailbox_url`` is our in-process server."""
    url = config.getoption("mailbox_url") or os.environ.get(ENV_VAR) or None
    return url if url is None else str(url)


def pytest_configure(config: pytest.Config) -> None:
    url = external_url(config)
    if url is not None and not url.startswith(("ws://", "wss://")):
        raise pytest.UsageError(
            f"--mailbox-url / ${ENV_VAR} must be a ws:// or wss:// URL, got {url!r}"
        )


def pytest_report_header(config: pytest.Config) -> Optional[str]:
    url = external_url(config)
    return None if url is None else f"wormhole-mailbox: mailbox_url is the external server {url}"


@pytest.fixture(scope="session")
def mailbox_server() -> Iterator[MailboxServer]:
    """One in-process mailbox server for the whole session."""
    with MailboxServer() as server:
        yield server


@pytest.fixture(scope="session")
def mailbox_url(request: pytest.FixtureRequest) -> str:
    """The mailbox server URL: external if configured, else ours."""
    url = external_url(request.config)
    if url is not None:
        return url
    server: MailboxServer = request.getfixturevalue("mailbox_server")
    return server.url


@pytest.fixture
def make_mailbox_server() -> Iterator[MailboxServerFactory]:
    """A factory of started servers, all stopped when the test ends."""
    servers: list[MailboxServer] = []

    def make(**options: Any) -> MailboxServer:
        server = MailboxServer(**options)
        server.start()
        servers.append(server)
        return server

    yield make
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.stop()
        except Exception as e:  # noqa: BLE001 - stop the others, then report
            errors.append(e)
    if errors:
        raise errors[0]
