"""Batch jobs over many images: the outcome of one item, a progress reporter, and the summary.

Every batch job (label maps in one process or on dask workers, the image cache, restore) turns each item
into an :class:`Outcome` instead of raising: a bad image is reported and skipped, the others go on. A
:class:`Reporter` shows a progress bar with running done/skipped/failed counts and prints failures as they
come; :func:`summarize` turns the outcomes into the lines printed at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm import tqdm

STATUSES = ("done", "skipped", "failed")
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What became of one item: ``status`` is "done", "skipped" or "failed" (then ``reason`` is one line
    saying why; a "done" item may carry a one-line note there, see :func:`notes`).

    ``regions``: regions of a label map made; ``path``: the file written, for jobs that write files.
    """

    image_id: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    regions: int = 0
    path: str | None = None


class Reporter:
    """A progress bar over ``total`` items with running status counts; failures printed as they come.

    Use as a context manager and call :meth:`add` with each outcome, in any order (dask delivers them as
    they finish). ``progress=False`` shows nothing.
    """

    def __init__(self, total: int, desc: str, progress: bool = True) -> None:
        self.progress = progress
        self.counts = dict.fromkeys(STATUSES, 0)
        self.bar = tqdm(total=total, desc=desc, unit="img", disable=not progress, dynamic_ncols=True,
                        mininterval=0.5)

    def add(self, outcome: Outcome) -> Outcome:
        self.counts[outcome.status] += 1
        if outcome.status == "failed" and self.progress:
            self.bar.write(f"failed {outcome.image_id}: {outcome.reason}")
        self.bar.set_postfix(self.counts, refresh=False)
        self.bar.update()
        return outcome

    def close(self) -> None:
        self.bar.close()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def run_each(items: Sequence[T], work: Callable[[T], Outcome], desc: str,
             progress: bool = True) -> list[Outcome]:
    """``work`` on every item in order (it must not raise for bad items), with a :class:`Reporter`."""
    with Reporter(len(items), desc, progress) as reporter:
        return [reporter.add(work(item)) for item in items]


def summarize(outcomes: Iterable[Outcome], done: str = "done",
              skipped: str = "skipped (already complete)") -> str:
    """Lines to print after a batch: counts, median time (and regions per image), then each failure."""
    outcomes = list(outcomes)
    by = {s: [o for o in outcomes if o.status == s] for s in STATUSES}
    lines = [f"{len(by['done'])} {done}, {len(by['skipped'])} {skipped}, {len(by['failed'])} failed"]
    if by["done"]:
        secs = sorted(o.seconds for o in by["done"])
        line = f"  median {secs[len(secs) // 2]:.2f} s/image"
        regions = sorted(o.regions for o in by["done"])
        if regions[-1]:
            line += (f", regions per image min {regions[0]} / median {regions[len(regions) // 2]} "
                     f"/ max {regions[-1]}")
        lines.append(line)
    lines += [f"  FAILED {o.image_id}: {o.reason}" for o in by["failed"]]
    return os.linesep.join(lines)


def notes(outcomes: Iterable[Outcome]) -> list[str]:
    """Lines for the notes of items done (a "done" outcome whose ``reason`` is set)."""
    return [f"  note {o.image_id}: {o.reason}" for o in outcomes if o.status == "done" and o.reason]


def failed(outcomes: Iterable[Outcome]) -> bool:
    """Whether any item failed (the command then exits with status 1)."""
    return any(o.status == "failed" for o in outcomes)
