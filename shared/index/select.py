"""Choosing entries of an index: one split, one group, one shard of n processes, at most N images.

Every command selects its images with :func:`select_entries`, so ``--split``, ``--group``, ``--shard`` and
``--limit`` mean the same everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from rat.shared.datasets.splits import SPLITS
from rat.shared.errors import ParamError
from rat.shared.index.entries import Entry


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """"i/n" -> (i, n) with 0 <= i < n; None for no sharding (a tuple is checked and passed on)."""
    if not text:
        return None
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ParamError("shard", f"{text!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise ParamError("shard", f"{text!r}: need 0 <= i < n")
    return i, n


def select_entries(entries: Sequence[Entry], split: str | None = None, *, group: str | None = None,
                   shard: str | tuple[int, int] | None = None, limit: int | None = None) -> list[Entry]:
    """Entries of one split ("all" or None: every split) and one group (None: every group), sorted by id,
    then one shard (every n-th from the i-th, "i/n"), then at most ``limit`` of them."""
    if split not in (None, "all", *SPLITS):
        raise ParamError("split", f"{split!r} is not one of {', '.join(SPLITS)} or all")
    chosen = sorted((e for e in entries if split in (None, "all", e.split) and group in (None, e.group)),
                    key=lambda e: e.id)
    where = parse_shard(shard)
    if where is not None:
        i, n = where
        chosen = chosen[i::n]
    return chosen[:limit] if limit is not None else chosen
