"""The conformance vectors, from Python: check any mailbox server (your own,
a test double, or ours) by URL.

    from wormhole_mailbox import conformance

    report = conformance.run("ws://127.0.0.1:4000/v1", filter="nameplate/*")
    assert report.ok, report.render()

The vectors are the ones bundled into this package's native module (the
repository's ``vectors/``), run by the Rust harness. A plain URL offers no
launch, restart, prune or permissions capability, so vectors that need one
are skipped.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

from wormhole_mailbox import _native

__all__ = ["Report", "VectorResult", "run"]


@dataclass(frozen=True)
class VectorResult:
    """The verdict on one vector."""

    #: The vector's id, e.g. ``"nameplate/claim-twice"``.
    id: str
    #: ``"required"``, ``"reference"`` or ``"informational"``.
    vector_class: str
    #: ``"pass"``, ``"fail"`` or ``"skip"``.
    outcome: str
    #: Whether a failure of it fails the run under the report's profile.
    counted: bool
    #: One line: why it failed or was skipped.
    reason: Optional[str]
    #: Several lines on failure: the step, the expected and the actual frame.
    diff: Optional[str]
    #: Wall time, in seconds.
    duration: float
    #: Every frame in and out, one line each.
    transcript: str

    @property
    def passed(self) -> bool:
        return self.outcome == "pass"

    @property
    def failed(self) -> bool:
        return self.outcome == "fail"

    @property
    def skipped(self) -> bool:
        return self.outcome == "skip"


@dataclass(frozen=True)
class Report:
    """Counts and per-vector outcomes of one run."""

    url: str
    #: ``"required"``, ``"reference"`` (default) or ``"all"``: which classes count.
    profile: str
    results: tuple[VectorResult, ...]
    passed: int
    failed: int
    skipped: int
    #: Failures that count under the profile.
    counted_failures: int
    #: Per class, per outcome: ``{"required": {"pass": 10, "fail": 0, "skip": 1}, ...}``.
    by_class: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def ok(self) -> bool:
        """True when no counted vector failed."""
        return self.counted_failures == 0

    @property
    def failures(self) -> list[VectorResult]:
        """Every failed vector (counted or not)."""
        return [r for r in self.results if r.failed]

    def render(self) -> str:
        """A readable summary: the failures, then the counts per class."""
        lines = []
        for r in self.failures:
            lines.append(f"--- {r.id} [{r.vector_class}{'' if r.counted else ', not counted'}]")
            lines.append(r.reason or "")
            if r.diff:
                lines.append(r.diff)
        lines.append(f"conformance of {self.url} (profile {self.profile}):")
        for klass, counts in self.by_class.items():
            lines.append(
                f"  {klass:<14} {counts.get('pass', 0):>4} pass  "
                f"{counts.get('fail', 0):>4} fail  {counts.get('skip', 0):>4} skip"
            )
        lines.append(f"{self.passed} passed, {self.failed} failed, {self.skipped} skipped")
        return "\n".join(lines)


def _result(d: dict[str, Any]) -> VectorResult:
    return VectorResult(
        id=d["id"],
        vector_class=d["class"],
        outcome=d["outcome"],
        counted=d["counted"],
        reason=d["reason"],
        diff=d["diff"],
        duration=d["duration"],
        transcript=d["transcript"],
    )


def run(
    url: str,
    *,
    filter: Union[str, Sequence[str], None] = None,
    vectors: Union[str, os.PathLike[str], None] = None,
    profile: str = "reference",
    jobs: int = 4,
    step_timeout: float = 5.0,
) -> Report:
    """Runs the conformance vectors against the mailbox server at ``url``.

    ``filter`` selects vectors by id: a glob (``"nameplate/*"``) or, without
    wildcards, a substring; several filters select their union. ``vectors``
    is a directory of vector files instead of the bundled ones. ``jobs``
    vectors run at once; each step waits at most ``step_timeout`` seconds.
    Blocks (with the interpreter released) until every vector has run.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    if filter is None:
        filters: Optional[list[str]] = None
    elif isinstance(filter, str):
        filters = [filter]
    else:
        filters = list(filter)
        if not all(isinstance(f, str) for f in filters):
            raise TypeError("filter must be a str or a sequence of str")
    if isinstance(jobs, bool) or not isinstance(jobs, int):
        raise TypeError(f"jobs must be an int, got {type(jobs).__name__}")
    raw = _native.run_conformance(
        url,
        filters=filters,
        vectors=None if vectors is None else os.fspath(vectors),
        profile=profile,
        jobs=jobs,
        step_timeout=float(step_timeout),
    )
    summary = raw["summary"]
    return Report(
        url=url,
        profile=summary["profile"],
        results=tuple(_result(d) for d in raw["results"]),
        passed=summary["pass"],
        failed=summary["fail"],
        skipped=summary["skip"],
        counted_failures=summary["counted_failures"],
        by_class={k: dict(v) for k, v in summary["by_class"].items()},
    )
