"""wormhole_mailbox.conformance: the harness's vectors from Python."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers import unused_port
from wormhole_mailbox import MailboxServer, conformance

VECTORS = Path(__file__).resolve().parents[2] / "vectors"


def test_our_server_conforms(mailbox_server: MailboxServer) -> None:
    report = conformance.run(mailbox_server.url)
    assert report.ok, report.render()
    assert report.failed == 0
    assert report.passed > 100
    assert report.total == report.passed + report.failed + report.skipped
    assert set(report.by_class) == {"required", "reference", "informational"}
    for r in report.results:
        assert r.outcome in {"pass", "fail", "skip"}
        assert r.vector_class in {"required", "reference", "informational"}
        if r.skipped:  # needs launch/restart/prune, which a URL can't offer
            assert r.reason and "plain URL" in r.reason
        if r.passed:
            assert r.transcript
    assert report.render().endswith(f"{report.passed} passed, 0 failed, {report.skipped} skipped")


def test_filters(mailbox_server: MailboxServer) -> None:
    claim = conformance.run(mailbox_server.url, filter="claim/*")
    assert claim.total > 0
    assert all(r.id.startswith("claim/") for r in claim.results)
    both = conformance.run(mailbox_server.url, filter=["claim/*", "bind/*"])
    assert {r.id.split("/")[0] for r in both.results} == {"claim", "bind"}
    assert conformance.run(mailbox_server.url, filter="no-such-vector").total == 0


def test_unreachable_server_fails() -> None:
    report = conformance.run(
        f"ws://127.0.0.1:{unused_port()}/v1", filter="bind/*", step_timeout=2
    )
    assert report.total > 0
    assert not report.ok
    assert report.failures
    assert all(r.failed or r.skipped for r in report.results)


@pytest.mark.skipif(not VECTORS.is_dir(), reason="needs the repository's vectors/")
def test_vectors_directory(mailbox_server: MailboxServer, tmp_path: Path) -> None:
    source = sorted((VECTORS / "claim").glob("*.json"))[0]
    (tmp_path / "claim").mkdir()
    shutil.copy(source, tmp_path / "claim" / source.name)
    report = conformance.run(mailbox_server.url, vectors=tmp_path)
    assert [r.id for r in report.results] == [f"claim/{source.stem}"]
    assert report.ok, report.render()


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"url": "http://127.0.0.1:1/"}, ValueError),
        ({"url": "not a url"}, ValueError),
        ({"url": 5}, TypeError),
        ({"profile": "strict"}, ValueError),
        ({"jobs": 0}, ValueError),
        ({"jobs": 1.5}, TypeError),
        ({"step_timeout": 0}, ValueError),
        ({"filter": [1]}, TypeError),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], error: type[Exception]) -> None:
    args: dict[str, object] = {"url": "ws://127.0.0.1:1/v1", **kwargs}
    with pytest.raises(error):
        conformance.run(**args)  # type: ignore[arg-type]


def test_missing_vectors_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="vectors"):
        conformance.run("ws://127.0.0.1:1/v1", vectors=tmp_path / "missing")
