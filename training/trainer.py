"""Training RAT, top to bottom: config, setup, data, model, optimiser, the loop, validation, checkpoints.

    cfg = make_config({"masks": "store.zarr", "dataset": "aapm", "root": "/data/aapm", "out": "runs/aapm"})
    summary = train(cfg)                  # or: torchrun --nproc_per_node 4 $(which rat-train) ...

Optimisation as in the paper and the authors' public code: Adam (betas 0.5, 0.999), lr 2e-4
cosine-annealed to 1e-6 over ``iters`` (200,000) steps, batch 8, focal region loss (gamma 1e-3,
delta 1). Patches come from :class:`rat.training.data.PatchDataset`, which is deterministic in
(seed, sample index): step s of a run always sees samples s * batch * world .. (s + 1) * batch *
world - 1 (rank r takes every world-th from r), so a resumed run continues exactly where it stopped.

A run directory holds ``last.pt`` (every ``save_every`` steps and at the end), ``best.pt`` (best
validation PSNR), ``config.json``, ``metrics.jsonl`` (or ``metrics.csv``), ``curves.png`` and,
when TensorBoard is installed, ``tb/`` (:mod:`rat.training.metrics`, :mod:`rat.training.figures`).
What a checkpoint holds: :mod:`rat.training.checkpoint`.

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (NCCL on
CUDA, gloo on CPU); rank 0 writes logs and checkpoints, validation is shared out over the ranks.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rat.shared.datasets import DatasetDef, Group, pick_group
from rat.shared.index import Entry
from rat.training.checkpoint import (
    CHECKPOINT_FORMAT,
    load_checkpoint,
    load_weights,
    model_args,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from rat.training.config import BEST, LAST, TrainConfig, TrainError, validate
from rat.training.distributed import Runtime, barrier, gather, mean_over_ranks, say, setup, teardown


def lr_at(step: int, lr: float, min_lr: float, iters: int) -> float:
    """Cosine annealing from ``lr`` at step 0 to ``min_lr`` at step ``iters`` (CosineAnnealingLR's closed
    form, stepped once per iteration as in the authors' code)."""
    if step >= iters:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * step / iters))


@dataclass
class RunData:
    """What a run trains and validates on, checked against the label store before the first step."""

    dataset: DatasetDef
    group: Group
    train: list[Entry]
    val: list[Entry]
    store: Any  # the open label store (zarr group)
    provenance: dict[str, Any]
    root: Path


@dataclass
class Progress:
    """Where a run stands: steps done, samples consumed (all ranks), best validation PSNR, last validation."""

    step: int = 0
    samples: int = 0
    best: float = -math.inf
    val: dict[str, Any] | None = None


def load_data(cfg: TrainConfig, progress: bool = False) -> RunData:
    """The group's training and validation entries, the store and the data root, all checked before the
    first step: every image needs a complete label map made from its LQ bytes whose own bytes are intact
    (StoreError listing every problem), and the LQ and HQ files under the root must be those the store was
    made from (TrainError naming the images)."""
    from rat.shared.store import open_store, provenance
    from rat.shared.store_dataset import check_sources, dataset_for
    from rat.training.data import MAX_LISTED, check_store

    store = open_store(cfg.masks)
    prov = provenance(store)
    ds, entries, root = dataset_for(store, cfg.dataset, cfg.root, cfg.index, progress=progress)
    group = pick_group(ds, cfg.group)
    mine = [e for e in entries if e.group == group.name]
    train_entries = [e for e in mine if e.split == "train"]
    val_entries = sorted((e for e in mine if e.split == cfg.val_split), key=lambda e: e.id)
    val_entries = val_entries[: cfg.val_limit] if cfg.val_limit is not None else val_entries
    if not train_entries:
        raise TrainError(f"{ds.name}/{group.name}: no training images in the index")
    check_store(store, train_entries + val_entries, hash_labels=True)
    problems = check_sources(ds, train_entries + val_entries, root, prov.get("derive_versions"), progress)
    if problems:
        more = [f"  ... and {len(problems) - MAX_LISTED} more"] if len(problems) > MAX_LISTED else []
        raise TrainError("\n".join([f"{root}: {len(problems)} images are not the files {cfg.masks} was made "
                                    "from:", *(f"  {p}" for p in problems[:MAX_LISTED]), *more]))
    return RunData(ds, group, train_entries, val_entries, store, prov, root)


def fill_cache(cfg: TrainConfig, rt: Runtime, data: RunData) -> None:
    """Put the run's images into the local image cache (each rank its share; the ranks of a machine, and
    other runs, may fill one cache at once)."""
    from rat.shared.batch import summarize
    from rat.shared.cache import cache_images

    entries = (data.train + data.val)[rt.rank :: rt.world]
    from rat.shared.store import DEFAULT_CHUNK

    chunk = int(data.provenance.get("chunk", [DEFAULT_CHUNK])[0])
    outcomes = cache_images(entries, data.root, cfg.cache, chunk=chunk, progress=rt.main and cfg.progress)
    if any(o.status == "failed" for o in outcomes):
        raise TrainError(f"image cache: {summarize(outcomes, done='cached', skipped='already cached')}")
    barrier(rt)


def validation(model: nn.Module, data: RunData, cfg: TrainConfig, rt: Runtime,
               amp: torch.dtype | None) -> dict[str, Any] | None:
    """PSNR/SSIM on whole validation images, shared out over the ranks; every rank gets the summary."""
    from rat.training.inference.evaluate import evaluate
    from rat.training.inference.scores import summarize

    if not data.val:
        return None
    mine = evaluate(model, data.val[rt.rank :: rt.world], data.root, data.store, data.group, cfg.tile,
                    cfg.overlap, autocast=amp, cache=False if cfg.no_cache else cfg.cache)
    scores = gather(rt, mine)
    s = summarize(scores)
    return {"psnr": s["restored"]["psnr"], "ssim": s["restored"]["ssim"], "lq_psnr": s["lq"]["psnr"],
            "lq_ssim": s["lq"]["ssim"], "images": len(scores)}


def checkpoint_state(cfg: TrainConfig, rt: Runtime, progress: Progress, model: nn.Module,
                     optimizer: torch.optim.Optimizer, args: dict[str, Any], data: RunData) -> dict[str, Any]:
    """Everything a resumed run needs to continue exactly (see :mod:`rat.training.checkpoint`)."""
    return {"format": CHECKPOINT_FORMAT, "step": progress.step, "samples": progress.samples,
            "world_size": rt.world, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": {"kind": "cosine", "lr": cfg.lr, "min_lr": cfg.min_lr, "iters": cfg.iters,
                          "next_lr": lr_at(progress.step, cfg.lr, cfg.min_lr, cfg.iters)},
            "config": asdict(cfg), "model_args": args, "provenance": data.provenance, "rng": rng_state(),
            "best_psnr": progress.best, "val": progress.val or {},
            "data": {"definition": data.dataset.text, "definition_sha256": data.dataset.sha256,
                     "dataset": data.dataset.name, "group": data.group.name, "root": str(data.root),
                     "train": len(data.train), "val": len(data.val)}}


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train (or resume) the run ``cfg`` describes.

    Returns {"step", "best_psnr", "val" (last validation summary), "out", "model" (the trained module)}.
    Raises TrainError / StoreError / ParamError with one-line reasons (StoreError lists every problem of
    the store) before the first step when the set-up is wrong.
    """
    validate(cfg)
    rt = setup(cfg.device)
    try:
        return _run(cfg, rt)
    finally:
        teardown()


def _run(cfg: TrainConfig, rt: Runtime) -> dict[str, Any]:
    from tqdm import tqdm

    from rat.training.data import PatchDataset, make_loader
    from rat.training.figures import plot_curves
    from rat.training.loss import focal_region_loss
    from rat.training.metrics import MetricsLog
    from rat.training.model import build_model

    # -- the run directory: a fresh run, or the checkpoint to continue from
    out = Path(cfg.out)
    last = out / LAST
    if last.is_file() and not cfg.resume:
        raise TrainError(f"{out}: already holds a run ({LAST}); pass `resume` to continue it, "
                         "or choose another `out`")
    resume = load_checkpoint(last) if cfg.resume and last.is_file() else None

    # -- data, checked against the store before anything runs; the image cache filled on first use
    data = load_data(cfg, progress=rt.main and cfg.progress)
    if not cfg.no_cache:
        fill_cache(cfg, rt, data)
    if resume is not None and resume["provenance"].get("fingerprint") != data.provenance.get("fingerprint"):
        raise TrainError(f"{cfg.masks}: not the label store this run was trained on (other provenance "
                         "fingerprint); resume with the original store")

    # -- model and optimiser
    torch.manual_seed(cfg.seed)
    args = model_args(cfg, data.group.channels)
    raw = build_model(args["name"], args["img_channel"], backend=cfg.backend, memory=cfg.memory,
                      **args["overrides"])
    if cfg.init and resume is None:
        load_weights(raw, load_checkpoint(cfg.init)["model"], cfg.init)
        say(rt, f"initialised from {cfg.init}")
    raw.to(rt.device)
    optimizer = torch.optim.Adam(raw.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    progress = Progress()
    if resume is not None:
        raw.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        progress = Progress(resume["step"], resume["samples"], resume["best_psnr"], resume["val"] or None)
        set_rng_state(resume["rng"])
        if resume["world_size"] != rt.world:
            say(rt, f"note: resuming on {rt.world} processes instead of {resume['world_size']}: "
                "the same samples, shared out differently")
        say(rt, f"resuming {out} at step {progress.step}")
    model = raw
    if rt.world > 1:
        ids = [rt.device] if rt.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(raw, device_ids=ids)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and rt.device.type == "cuda")
    amp = torch.bfloat16 if bf16 else None
    gamma = cfg.gamma if cfg.loss == "fr" else 0.0

    # -- logging (rank 0)
    log, history = None, []
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n", encoding="utf-8")
        log = MetricsLog(out, cfg.metrics_format)
        history = log.truncate(progress.step)
        if log.tb is None and progress.step == 0:
            say(rt, f"metrics: {log.path} (TensorBoard not installed)")

    # -- the patch stream: sample n of this rank is dataset index samples + rank + world * n
    patches = PatchDataset(cfg.masks, data.train, data.group, root=data.root, patch_size=cfg.patch_size,
                           seed=cfg.seed, cache=False if cfg.no_cache else cfg.cache, check_labels=False)
    if not all(patches.cached):
        missing = len(patches.cached) - sum(patches.cached)
        say(rt, f"note: {missing} of {len(patches.cached)} training images are not in an image cache, so "
            "every patch decodes the whole source files (slow for large images)")
    batches = iter(make_loader(patches, cfg.batch_size, cfg.workers, start=progress.samples, rank=rt.rank,
                               world_size=rt.world))

    # -- the loop
    bar = tqdm(total=cfg.iters, initial=progress.step, desc="train", unit="it",
               disable=not (rt.main and cfg.progress), dynamic_ncols=True, mininterval=1.0)
    model.train()
    loss_sum, loss_n = torch.zeros((), device=rt.device), 0
    t0 = t_log = time.perf_counter()
    step_log = progress.step
    while progress.step < cfg.iters:
        batch = next(batches)
        lq = batch["lq"].to(rt.device, non_blocking=True)  # (B, C, P, P)
        hq = batch["hq"].to(rt.device, non_blocking=True)
        labels = batch["labels"].to(rt.device, non_blocking=True)  # (B, P, P)
        lr = lr_at(progress.step, cfg.lr, cfg.min_lr, cfg.iters)
        for pg in optimizer.param_groups:
            pg["lr"] = lr
        with torch.autocast(rt.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            pred = model(lq, labels if cfg.attention == "rmsa" else None)
        loss = focal_region_loss(pred.float(), hq, labels, gamma=gamma, delta=cfg.delta, norm=cfg.fr_norm)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        progress.step += 1
        progress.samples += cfg.batch_size * rt.world
        loss_sum += loss.detach()
        loss_n += 1
        bar.update()
        step, final = progress.step, progress.step == cfg.iters

        # -- log the mean training loss
        if step % cfg.log_every == 0 or final:
            mean = float(mean_over_ranks(rt, loss_sum)) / loss_n
            now = time.perf_counter()
            if rt.main:
                record = {"step": step, "kind": "train", "loss": mean, "lr": lr,
                          "it_s": (step - step_log) / max(now - t_log, 1e-9), "elapsed": now - t0}
                log.append(record)
                history.append(record)
                bar.set_postfix(loss=f"{mean:.4g}", lr=f"{lr:.3g}", refresh=False)
            loss_sum.zero_()
            loss_n, t_log, step_log = 0, now, step

        # -- validate on whole images; keep the best checkpoint
        if step % cfg.eval_every == 0 or final:
            progress.val = validation(raw, data, cfg, rt, amp)
            val = progress.val
            if rt.main and val is not None:
                record = {"step": step, "kind": "val", **val, "elapsed": time.perf_counter() - t0}
                log.append(record)
                history.append(record)
                say(rt, f"step {step}: val PSNR {val['psnr']:.4f} dB, SSIM {val['ssim']:.4f} "
                    f"(LQ {val['lq_psnr']:.4f} / {val['lq_ssim']:.4f})")
            if val is not None and val["psnr"] > progress.best:
                progress.best = val["psnr"]
                if rt.main:
                    state = checkpoint_state(cfg, rt, progress, raw, optimizer, args, data)
                    save_checkpoint(out / BEST, state)
            if rt.main:
                plot_curves(history, out / "curves.png")

        # -- save the last checkpoint; stop early when asked
        stop = cfg.stop_at is not None and step >= cfg.stop_at
        if step % cfg.save_every == 0 or final or stop:
            if rt.main:
                save_checkpoint(out / LAST, checkpoint_state(cfg, rt, progress, raw, optimizer, args, data))
            barrier(rt)
        if stop:
            say(rt, f"stopped at step {step} (--stop-at); continue with --resume")
            break
    bar.close()
    if rt.main:
        plot_curves(history, out / "curves.png")
        log.close()
    return {"step": progress.step, "best_psnr": progress.best, "val": progress.val, "out": str(out),
            "model": raw}
