"""The table of `rat-train table` as text, CSV and Markdown, and its figure grid (the paper's Figures 2-4).

Columns: the row, the network (package, version and class), parameters, GFLOPs per 256 x 256 patch, PSNR
and SSIM (mean +- std over the test images), the paired difference to the baseline row (RAT) with its 95 %
bootstrap interval and Wilcoxon p (as `rat-train compare` prints them), training ms per step and inference
ms per image. The LQ input is the first row.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import torch

from rat.training.data import load_full
from rat.training.figures import display
from rat.training.inference.compare import LQ
from rat.training.inference.scores import summarize_scores
from rat.training.inference.tiling import model_labels, predict
from rat.training.table import Table

HEAD = ["model", "network", "params (M)", "GFLOPs", "PSNR (dB)", "SSIM", "dPSNR [95% CI]", "p",
        "dSSIM [95% CI]", "p", "train ms/step", "infer ms/img"]


def _network(prov: dict[str, Any]) -> str:
    """The class and its package, e.g. ``SwinIR (spandrel 0.4.2)``; a class named by its module
    (ldct-benchmark's ``Model``) with the module: ``redcnn.network.Model``."""
    module, _, cls = str(prov.get("class", "")).rpartition(":")
    if cls == "Model":
        cls = ".".join([*module.split(".")[-2:], cls])
    return f"{cls} ({prov.get('package')} {prov.get('version')})"


def table_rows(t: Table) -> list[dict[str, Any]]:
    """One dict per row (LQ input first): the values of the table, unrounded."""
    c = t.comparison
    out = []
    by_label = {s.row.label: s for s in t.rows}
    for name in c.names:
        s = summarize_scores(list(c.rows[name].values()))["restored"]
        row: dict[str, Any] = {"model": name, "psnr": s["psnr"], "psnr_std": s["psnr_std"], "ssim": s["ssim"],
                               "ssim_std": s["ssim_std"], "images": len(c.rows[name])}
        if name in by_label:
            r = by_label[name]
            prov = r.restorer.meta.get("model") or {}
            row.update(network=_network(prov), registered=r.row.model, params=r.params, gflops=r.gflops,
                       train_ms=r.train_ms, infer_ms=r.infer_ms, run=str(r.run), status=r.done,
                       best_step=r.restorer.meta.get("step"))
        if name != c.baseline:
            d, e = c.pairs[name]["psnr"], c.pairs[name]["ssim"]
            row.update(dpsnr=d.mean, dpsnr_low=d.low, dpsnr_high=d.high, dpsnr_p=d.p, dssim=e.mean,
                       dssim_low=e.low, dssim_high=e.high, dssim_p=e.p)
        out.append(row)
    return out


def _cells(row: dict[str, Any], baseline: str) -> list[str]:
    def num(key: str, fmt: str) -> str:
        return "" if row.get(key) is None else format(row[key], fmt)

    cells = [row["model"], row.get("network", "" if row["model"] != LQ else "(the input)"),
             "" if "params" not in row else f"{row['params'] / 1e6:.3f}", num("gflops", ".2f"),
             f"{row['psnr']:.4f} ± {row['psnr_std']:.4f}", f"{row['ssim']:.4f} ± {row['ssim_std']:.4f}"]
    if row["model"] == baseline:
        cells += ["(baseline)", "", "", ""]
    else:
        cells += [f"{row['dpsnr']:+.4f} [{row['dpsnr_low']:+.4f}, {row['dpsnr_high']:+.4f}]",
                  f"{row['dpsnr_p']:.3g}",
                  f"{row['dssim']:+.5f} [{row['dssim_low']:+.5f}, {row['dssim_high']:+.5f}]",
                  f"{row['dssim_p']:.3g}"]
    return [*cells, num("train_ms", ".0f"), num("infer_ms", ".0f")]


def format_table(t: Table) -> str:
    """The table as fixed-width text."""
    lines = [_cells(r, t.baseline) for r in table_rows(t)]
    widths = [max(len(h), *(len(x[k]) for x in lines)) for k, h in enumerate(HEAD)]
    def line(cells: list[str]) -> str:
        return "  ".join(x.ljust(w) if k < 2 else x.rjust(w)
                         for k, (x, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(HEAD), *(line(cells) for cells in lines)])


def write_table_csv(t: Table, path: str | Path) -> Path:
    """Every value of every row, unrounded."""
    rows = table_rows(t)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_table_md(t: Table, path: str | Path, title: str) -> Path:
    """The table in Markdown, with its notes."""
    rows = table_rows(t)
    n = rows[0]["images"]
    lines = [f"## {title}", "", f"Test split, {n} images; paired differences against {t.baseline} (95 % "
             "bootstrap CI of the mean, Wilcoxon signed-rank p). GFLOPs per 256 x 256 patch; times on this "
             "machine.", "", "| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(_cells(r, t.baseline)) + " |" for r in rows]
    if t.notes:
        lines += ["", *(f"- {note}" for note in t.notes)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


#: Panels per row of the figure grid.
PER_ROW = 6


def save_grid(t: Table, path: str | Path, image_id: str | None = None) -> Path:
    """PNG: LQ, every model and HQ on one test image (PSNR/SSIM in the titles), each with the zoomed crop of
    the image's central quarter below it (the paper's Figures 2-4), six panels to a row."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    first = t.rows[0]
    entries = {e.id: e for e in first.split.entries}
    entry = entries.get(image_id or "", first.split.entries[0])
    group = first.restorer.group
    lq, hq, labels = load_full(first.split.store, entry, first.split.root, group)
    panels = [("LQ input", torch.as_tensor(lq), t.comparison.rows[LQ][entry.id])]
    for s in t.rows:
        lab = model_labels(s.restorer.model, labels)
        out = predict(s.restorer.model, torch.as_tensor(lq), lab, s.restorer.tile, s.restorer.overlap)
        panels.append((s.row.label, out, t.comparison.rows[s.row.label][entry.id]))
    panels.append(("HQ", torch.as_tensor(hq), None))
    h, w = hq.shape[1:]
    size = max(16, min(h, w) // 4)
    y, x = (h - size) // 2, (w - size) // 2
    cols = min(PER_ROW, len(panels))
    blocks = -(-len(panels) // cols)
    fig = Figure(figsize=(2.6 * cols, 5.4 * blocks), layout="constrained")
    axes = fig.subplots(2 * blocks, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for k, (name, img, score) in enumerate(panels):
        view = display(img, group)
        title = name if score is None else f"{name}\n{score.psnr:.2f} dB / {score.ssim:.4f}"
        top, col = 2 * (k // cols), k % cols
        for row, part in ((top, view), (top + 1, view[y:y + size, x:x + size])):
            axes[row][col].imshow(part, cmap="gray" if part.ndim == 2 else None, vmin=0, vmax=1,
                                  interpolation="nearest")
        axes[top][col].set_title(title, fontsize=9)
        axes[top][col].add_patch(Rectangle((x, y), size, size, fill=False, color="yellow", lw=1))
    fig.suptitle(f"{first.restorer.dataset.name}/{group.name}: {entry.id}", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path
