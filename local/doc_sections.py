"""Generated sections of the docs: text between two marker comments, found and replaced.

Each command that writes into a document owns a section of it, between its own markers
(``<!-- fleet:begin -->`` ... ``<!-- fleet:end -->`` for ``make fleet``, ``<!-- bench-table
-->`` ... ``<!-- /bench-table -->`` for ``make bench``), and leaves the rest as it is. A
section says when and from which commit it was generated (``generated_at``, ``commit``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Markers:
    """The comments a section begins and ends with."""

    begin: str
    end: str

    @classmethod
    def named(cls, name: str) -> Markers:
        """``<!-- name -->`` ... ``<!-- /name -->`` (``make bench``'s)."""
        return cls(f"<!-- {name} -->", f"<!-- /{name} -->")

    def wrap(self, body: str) -> str:
        """A section of ``body`` between the markers, each on a line of its own."""
        return f"{self.begin}\n{body}\n{self.end}"


def commit() -> str:
    """The commit a section is generated from (short), or "" outside a git checkout."""
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607 - git from PATH, fixed args
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def generated_at() -> str:
    """Now, as a section's "Generated" line says it: ``2026-12-04 21:49 UTC``."""
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def _span(document: str, markers: Markers) -> tuple[int, int] | None:
    """From the begin marker to just after the end marker that follows it."""
    begin = document.find(markers.begin)
    end = document.find(markers.end, begin)
    if begin < 0 or end < 0:
        return None
    return begin, end + len(markers.end)


def _line_span(document: str, markers: Markers) -> tuple[int, int] | None:
    """The span, with the end of the end marker's line."""
    span = _span(document, markers)
    if span is None:
        return None
    begin, end = span
    return begin, end + 1 if document.startswith("\n", end) else end


def find(document: str, markers: Markers) -> str | None:
    """The section, markers included (and the end of the last one's line), if there is one."""
    span = _line_span(document, markers)
    return None if span is None else document[span[0] : span[1]]


def splice(document: str, markers: Markers, section: str, *, before: str | None = None) -> str:
    """Put ``section`` (markers included) in place of the document's; a document without one
    gets it before the line ``before`` begins (a heading, say) if given and found, else at
    its end after a blank line. The rest of the document stays as it is."""
    span = _line_span(document, markers)
    if span is not None:
        return document[: span[0]] + section + document[span[1] :]
    anchor = document.find("\n" + before) if before else -1
    if anchor < 0:
        return document.rstrip("\n") + "\n\n" + section
    return document[: anchor + 1] + section + "\n" + document[anchor + 1 :]


def replace_body(document: str, markers: Markers, body: str) -> str:
    """Put ``body`` between the document's markers, which must be there (``ValueError``)."""
    span = _span(document, markers)
    if span is None:
        raise ValueError(f"no {markers.begin} ... {markers.end} section in the document")
    return document[: span[0]] + markers.wrap(body) + document[span[1] :]
