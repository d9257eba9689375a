"""Choosing entries of an index: one split, one group, one shard of n processes, at most N images.

Every command selects its images with :func:`select_entries`, so ``--split``, ``--group``, ``--shard`` and
``--limit`` mean the same everywhere. Indexes made before validation splits existed (older stores and index
files) get theirs from :func:`with_val_split`, carved from the training units by the definition's rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from rat.shared.datasets.definition import DatasetDef, Group
from rat.shared.datasets.patterns import pattern_regex
from rat.shared.datasets.splits import SPLITS, carve_val
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


def entry_unit(group: Group, entry: Entry) -> str:
    """The value of the group's split unit (e.g. the patient) of an entry, read from its HQ path."""
    for pattern in group.hq:
        m = pattern_regex(pattern).fullmatch(entry.hq)
        if m:
            return m.group(group.split.unit)
    return entry.id  # an HQ path no pattern matches (an index made elsewhere): the image is its own unit


def with_val_split(ds: DatasetDef, entries: Sequence[Entry]) -> tuple[list[Entry], str | None]:
    """``entries``, and for each group that has training entries but no validation entries (an index made
    before validation splits), validation units carved from its training units (:func:`carve_val`), with a
    note saying so; (entries unchanged, None) when there is nothing to carve."""
    entries = list(entries)
    notes = []
    for name, group in sorted(ds.groups.items()):
        mine = [e for e in entries if e.group == name]
        if not mine or any(e.split == "val" for e in mine):
            continue
        train_units = {entry_unit(group, e) for e in mine if e.split == "train"}
        val = carve_val(group.split, train_units)
        if not val:
            continue
        entries = [replace(e, split="val") if e.group == name and e.split == "train" and
                   entry_unit(group, e) in val else e for e in entries]
        notes.append(f"{name}: {len(val)} of {len(train_units)} training {group.split.unit}s")
    if not notes:
        return entries, None
    return entries, (f"note: this index has no validation split; validating on {'; '.join(notes)}, carved by "
                     "the definition's seeded rule (the same every time)")
