"""The real-client tests again, through `--mailbox-url`, against the pinned
Python server (magic-wormhole-mailbox-server 0.8.0) that this test starts
with `twist`: the same suite runs against either server."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import REQUIRE_NETNS

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 60


@pytest.fixture
def reference_server(tmp_path: Path) -> Iterator[str]:
    """`twist wormhole-mailbox` on a free loopback port; yields its URL."""
    twist = Path(sys.executable).with_name("twist")
    workdir = tmp_path / "reference"
    workdir.mkdir()
    log_path = workdir / "twist.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                str(twist),
                "wormhole-mailbox",
                "--port=tcp:0:interface=127.0.0.1",
                f"--channel-db={workdir / 'channel.sqlite'}",
            ],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        port = None
        while port is None:
            match = re.search(r"Site starting on (\d+)", log_path.read_text())
            if match:
                port = int(match.group(1))
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"twist did not start:\n{log_path.read_text()}")
            else:
                time.sleep(0.1)
        yield f"ws://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.usefixtures("loopback_only")
def test_real_clients_against_the_python_server(
    pytester: pytest.Pytester, reference_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(REQUIRE_NETNS, "1")  # we checked: it is isolated
    pytester.makeconftest((HERE / "conftest.py").read_text())
    pytester.makepyfile(
        helpers=(HERE / "helpers.py").read_text(),
        test_real_client=(HERE / "test_real_client.py").read_text(),
    )
    result = pytester.runpytest_subprocess("--mailbox-url", reference_server, "-v")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(
        [f"wormhole-mailbox: mailbox_url is the external server {reference_server}"]
    )
