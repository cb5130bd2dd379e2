"""The suite must run against the installed wheel, not the source tree."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import wormhole_mailbox
from wormhole_mailbox import _native

SOURCE_TREE = Path(__file__).resolve().parents[1]


def test_imported_from_the_installed_wheel() -> None:
    package = Path(wormhole_mailbox.__file__).resolve().parent
    assert SOURCE_TREE not in package.parents, f"imported from the source tree: {package}"
    assert Path(_native.__file__).resolve().parent == package


def test_wheel_ships_the_stub_and_py_typed() -> None:
    package = Path(wormhole_mailbox.__file__).resolve().parent
    assert (package / "_native.pyi").is_file()
    assert (package / "py.typed").is_file()


def test_pytest_plugin_entry_point() -> None:
    eps = importlib.metadata.distribution("wormhole-mailbox").entry_points
    assert [(ep.group, ep.name, ep.value) for ep in eps] == [
        ("pytest11", "wormhole_mailbox", "wormhole_mailbox.pytest_plugin")
    ]


def test_version_matches_distribution() -> None:
    assert wormhole_mailbox.__version__ == importlib.metadata.version("wormhole-mailbox")
