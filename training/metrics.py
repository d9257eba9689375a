"""The metrics log of a run: records as JSON lines or CSV, mirrored to TensorBoard when it is installed.

A process killed while it appends leaves at most a torn last line, which readers ignore; a resumed run
rewrites the log up to its step atomically (temporary file, then rename).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


class MetricsLog:
    """Records of a run ({"step", "kind": "train"|"val", ...}) as JSON lines or CSV, and TensorBoard."""

    COLUMNS = ("step", "kind", "loss", "lr", "it_s", "psnr", "ssim", "lq_psnr", "lq_ssim", "elapsed", "split",
               "images")
    TEXT = ("kind", "split")

    def __init__(self, out: Path, fmt: str = "jsonl", tensorboard: bool = True) -> None:
        self.path = out / f"metrics.{fmt}"
        self.fmt = fmt
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional: pip install rat-restore[tensorboard]
                pass
            else:
                self.tb = SummaryWriter(str(out / "tb"))

    def records(self) -> list[dict[str, Any]]:
        """The complete records (a last line without its newline is a torn write of a killed process)."""
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        lines = io.StringIO(text[: text.rfind("\n") + 1], newline=None)
        if self.fmt == "jsonl":
            return [json.loads(line) for line in lines if line.strip()]
        return [{k: (v if k in self.TEXT else _number(v)) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(lines)]

    def truncate(self, step: int) -> list[dict[str, Any]]:
        """Drop records after ``step`` (a resumed run rewrites them), atomically; returns the kept ones."""
        kept = [r for r in self.records() if r["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(self._format(kept, header=True), encoding="utf-8", newline="")
        os.replace(tmp, self.path)
        return kept

    def _format(self, records: list[Mapping[str, Any]], header: bool) -> str:
        if self.fmt == "jsonl":
            return "".join(json.dumps(r) + "\n" for r in records)
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=self.COLUMNS)
        if header:
            writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in self.COLUMNS} for r in records)
        return text.getvalue()

    def append(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            fh.write(self._format([record], header=fh.tell() == 0))
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("step", "kind") and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)
