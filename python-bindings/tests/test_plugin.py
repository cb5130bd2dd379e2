"""The pytest plugin: fixtures in this session, and `--mailbox-url` / the
environment variable in inner sessions run with `pytester`."""

from __future__ import annotations

import pytest

from helpers import client
from wormhole_mailbox import MailboxServer
from wormhole_mailbox.pytest_plugin import ENV_VAR, MailboxServerFactory

# Inner sessions run in a subprocess: the outer session has pytest-twisted's
# reactor and our servers loaded, and the plugin must come from the
# installed entry point exactly as a user's suite gets it.
pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_mailbox_server_fixture(mailbox_server: MailboxServer) -> None:
    assert mailbox_server.running
    with client(mailbox_server.url) as (_, welcome):
        assert "your-address" in welcome


def test_mailbox_url_defaults_to_ours(mailbox_url: str, mailbox_server: MailboxServer) -> None:
    assert mailbox_url == mailbox_server.url


def test_make_mailbox_server(make_mailbox_server: MailboxServerFactory) -> None:
    a = make_mailbox_server(motd="a")
    b = make_mailbox_server(advertise_version="1.2.3")
    assert a.running and b.running and a.port != b.port
    with client(a.url) as (_, welcome):
        assert welcome["motd"] == "a"
    with client(b.url) as (_, welcome):
        assert welcome["current_cli_version"] == "1.2.3"


def test_make_mailbox_server_bad_option(make_mailbox_server: MailboxServerFactory) -> None:
    with pytest.raises(TypeError):
        make_mailbox_server(bogus=1)


INNER_URL_TEST = """
import wormhole_mailbox

def test_url(mailbox_url):
    assert mailbox_url == {url!r}
    # The in-process server was not started for it.
    assert len(wormhole_mailbox._running) == 0
"""


def test_mailbox_url_option(pytester: pytest.Pytester) -> None:
    url = "ws://127.0.0.1:9/v1"
    pytester.makepyfile(INNER_URL_TEST.format(url=url))
    result = pytester.runpytest_subprocess("--mailbox-url", url)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"wormhole-mailbox: mailbox_url is the external server {url}"])


def test_mailbox_url_env_var(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "ws://127.0.0.1:10/v1"
    monkeypatch.setenv(ENV_VAR, url)
    pytester.makepyfile(INNER_URL_TEST.format(url=url))
    pytester.runpytest_subprocess().assert_outcomes(passed=1)


def test_option_wins_over_env_var(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "ws://127.0.0.1:11/v1")
    url = "ws://127.0.0.1:12/v1"
    pytester.makepyfile(INNER_URL_TEST.format(url=url))
    pytester.runpytest_subprocess("--mailbox-url", url).assert_outcomes(passed=1)


def test_bad_mailbox_url_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest_subprocess("--mailbox-url", "http://example.invalid/")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*must be a ws:// or wss:// URL*"])


def test_help_lists_the_option(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*--mailbox-url=URL*"])


def test_session_server_is_shared_and_factory_servers_are_stopped(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        seen = {}

        def test_one(mailbox_server, mailbox_url, make_mailbox_server):
            assert mailbox_url == mailbox_server.url
            seen["session"] = mailbox_server
            seen["made"] = make_mailbox_server(motd="x")
            assert seen["made"].running

        def test_two(mailbox_server):
            assert mailbox_server is seen["session"]
            assert mailbox_server.running
            assert not seen["made"].running
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_overriding_a_suites_own_fixture(pytester: pytest.Pytester) -> None:
    """The README's recipe: a suite whose session fixture `mailbox` started
    the Twisted server (as magic-wormhole's own tests do, using only
    `mailbox.url`) switches by overriding just that fixture."""
    pytester.makeconftest(
        """
        import pytest
        from wormhole_mailbox import MailboxServer

        @pytest.fixture(scope="session")
        def mailbox():
            with MailboxServer(advertise_version="0.24.0") as server:
                yield server
        """
    )
    pytester.makepyfile(
        """
        import json
        from websockets.sync.client import connect

        def test_client(mailbox):
            with connect(mailbox.url) as ws:
                welcome = json.loads(ws.recv())["welcome"]
            assert welcome["current_cli_version"] == "0.24.0"

        def test_same_server(mailbox):
            assert mailbox.running
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=2)


def test_overriding_with_mailbox_url(pytester: pytest.Pytester) -> None:
    """The other recipe: a fixture that only needs a URL takes `mailbox_url`,
    so `--mailbox-url` can point the whole suite elsewhere."""
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(scope="session")
        def relay_url(mailbox_url):
            return mailbox_url
        """
    )
    pytester.makepyfile(
        """
        import json
        from websockets.sync.client import connect

        def test_client(relay_url):
            with connect(relay_url) as ws:
                assert json.loads(ws.recv())["type"] == "welcome"
        """
    )
    pytester.runpytest_subprocess().assert_outcomes(passed=1)
