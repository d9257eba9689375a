"""The metrics log of a run: records as JSON lines or CSV, mirrored to TensorBoard when it is installed."""

from __future__ import annotations

import csv
import json
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
            except ImportError:  # optional: pip install rat[tensorboard]
                pass
            else:
                self.tb = SummaryWriter(str(out / "tb"))

    def records(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8", newline="") as fh:
            if self.fmt == "jsonl":
                return [json.loads(line) for line in fh if line.strip()]
            return [{k: (v if k in self.TEXT else _number(v)) for k, v in row.items() if v not in ("", None)}
                    for row in csv.DictReader(fh)]

    def truncate(self, step: int) -> list[dict[str, Any]]:
        """Drop records after ``step`` (a resumed run rewrites them); returns the kept ones."""
        kept = [r for r in self.records() if r["step"] <= step]
        self.path.unlink(missing_ok=True)
        for r in kept:
            self._write(r)
        return kept

    def _write(self, record: Mapping[str, Any]) -> None:
        new = not self.path.is_file()
        with open(self.path, "a", encoding="utf-8", newline="") as fh:
            if self.fmt == "jsonl":
                fh.write(json.dumps(record) + "\n")
            else:
                writer = csv.DictWriter(fh, fieldnames=self.COLUMNS)
                if new:
                    writer.writeheader()
                writer.writerow({k: record.get(k, "") for k in self.COLUMNS})

    def append(self, record: Mapping[str, Any]) -> None:
        self._write(record)
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
