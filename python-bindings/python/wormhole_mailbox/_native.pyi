# Hand-written stub for the native module (src/*.rs); checked in CI with
# `python -m mypy.stubtest wormhole_mailbox._native`.
import os
from typing import Any, Optional, Union, final

__all__ = ["MailboxServer", "ServerError", "__version__", "run_conformance"]

__version__: str

class ServerError(RuntimeError):
    """The mailbox server could not start or stopped with an error."""

_Path = Union[str, os.PathLike[str]]

@final
class MailboxServer:
    def __new__(
        cls,
        *,
        host: str = ...,
        port: int = 0,
        channel_db: Optional[_Path] = None,
        usage_db: Optional[_Path] = None,
        motd: Optional[str] = None,
        advertise_version: Optional[str] = None,
        signal_error: Optional[str] = None,
        disallow_list: bool = False,
        blur_usage: Optional[int] = None,
        prune_interval: Optional[float] = None,
        channel_expiration: Optional[float] = None,
        ping_interval: Optional[float] = None,
        ping_timeout: Optional[float] = None,
        durability: Optional[str] = None,
        max_message_size: Optional[int] = None,
        max_connections: Optional[int] = None,
        handshake_timeout: Optional[float] = None,
    ) -> MailboxServer: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...
    @property
    def running(self) -> bool: ...
    @property
    def port(self) -> Optional[int]: ...
    @property
    def host(self) -> Optional[str]: ...
    @property
    def url(self) -> Optional[str]: ...
    def nameplates(self, app_id: str) -> list[str]: ...
    def mailboxes(
        self, app_id: str
    ) -> list[tuple[str, bool, bool, float, int, list[tuple[str, bool, float, Optional[str]]]]]: ...
    def connection_count(self) -> int: ...
    def usage_rows(self, table: str) -> list[dict[str, Any]]: ...

def run_conformance(
    url: str,
    *,
    filters: Optional[list[str]] = None,
    vectors: Optional[_Path] = None,
    profile: str = "reference",
    jobs: int = 4,
    step_timeout: float = 5.0,
) -> dict[str, Any]: ...
