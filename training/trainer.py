"""Training RAT, top to bottom: the run, its data (checked once), the model, the loop, validation, saving.

    summary = train({"masks": "store.zarr", "out": "runs/aapm"})   # or: torchrun ... $(which rat-train) ...

Optimisation as in the paper and the authors' public code: Adam (betas 0.5, 0.999), lr 2e-4
cosine-annealed to 1e-6 over ``iters`` (200,000) steps, batch 8, focal region loss (gamma 1e-3,
delta 1). Patches come from :class:`rat.training.data.PatchDataset`, which is deterministic in
(seed, sample index): step s of a run always sees samples s * batch * world .. (s + 1) * batch *
world - 1 (rank r takes every world-th from r), so a resumed run continues exactly where it stopped.
The run folder, its settings and its checkpoints are :class:`rat.training.run.Run`.

Under ``torchrun`` (WORLD_SIZE > 1) the model is wrapped in DistributedDataParallel (NCCL on
CUDA, gloo on CPU); rank 0 writes logs and checkpoints, validation is shared out over the ranks.
With ``torchrun --max-restarts N ... --resume`` a run survives dying ranks: torchrun stops the
other ranks and starts them all again, and each continues from the newest ``last.pt`` (a fresh
run while there is none). Every rank reads ``last.pt`` before joining the process group, and rank
0 writes a newer one only after a step that needs all of them, so all read the same file; they
check that they did.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from rat.shared import store as st
from rat.shared.datasets import pick_group
from rat.shared.errors import one_line
from rat.shared.image_cache import cache_images
from rat.shared.index import select_entries
from rat.shared.jobs import summarize
from rat.training.checkpoint import load_weights, model_args, set_rng_state
from rat.training.config import DeviceFault, TrainConfig, TrainError, default_workers
from rat.training.data import PatchDataset, make_loader
from rat.training.distributed import Runtime, barrier, gather, mean_over_ranks, say, setup, teardown
from rat.training.figures import plot_curves
from rat.training.inference.evaluate import evaluate
from rat.training.inference.scores import summarize_scores
from rat.training.loss import focal_region_loss
from rat.training.metrics import MetricsLog
from rat.training.model.compiling import compile_blocks
from rat.training.model.registry import build_network, takes_labels
from rat.training.model_folder import load_model_source
from rat.training.run import BEST, LAST, Run, RunData


def lr_at(step: int, lr: float, min_lr: float, iters: int) -> float:
    """Cosine annealing from ``lr`` at step 0 to ``min_lr`` at step ``iters`` (CosineAnnealingLR's closed
    form, stepped once per iteration as in the authors' code)."""
    if step >= iters:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * step / iters))


def load_data(cfg: TrainConfig, progress: bool = False) -> RunData:
    """The group's training and validation entries, the store and the data root, all checked once before
    the first step (:func:`rat.shared.store.check_for_training`: every label map complete, made from its LQ
    bytes and intact, every LQ and HQ file the one the store was made from; StoreError listing the images)."""
    store = st.open_store(cfg.masks)
    prov = st.provenance(store)
    ds, entries, root = st.dataset_for(store, cfg.dataset, cfg.root, cfg.index, progress=progress)
    group = pick_group(ds, cfg.group)
    train_entries = select_entries(entries, "train", group=group.name)
    val_entries = select_entries(entries, cfg.val_split, group=group.name, limit=cfg.val_limit)
    if not train_entries:
        raise TrainError(f"{ds.name}/{group.name}: no training images in the index")
    st.check_for_training(store, ds, train_entries + val_entries, root, cfg.masks, progress=progress)
    return RunData(ds, group, train_entries, val_entries, store, prov, root)


def fill_cache(cfg: TrainConfig, rt: Runtime, data: RunData) -> set[str] | None:
    """Put the run's images into the local image cache (each rank its share; the ranks of a machine, and
    other runs, may fill one cache at once). Returns the ids now cached when this process filled them all
    (one process), else None (ask the cache)."""
    entries = (data.train + data.val)[rt.rank :: rt.world]
    chunk = int(data.provenance.get("chunk", [st.DEFAULT_CHUNK])[0])
    outcomes = cache_images(entries, data.root, cfg.cache, chunk=chunk, progress=rt.main and cfg.progress)
    if any(o.status == "failed" for o in outcomes):
        raise TrainError(f"image cache: {summarize(outcomes, done='cached', skipped='already cached')}")
    barrier(rt)
    return {o.image_id for o in outcomes} if rt.world == 1 else None


def validation(model: nn.Module, data: RunData, cfg: TrainConfig, rt: Runtime,
               amp: torch.dtype | None) -> dict[str, Any] | None:
    """PSNR/SSIM on whole validation images, shared out over the ranks; every rank gets the summary."""
    if not data.val:
        return None
    mine = evaluate(model, data.val[rt.rank :: rt.world], data.root, data.store, data.group, cfg.tile,
                    cfg.overlap, autocast=amp, cache=False if cfg.no_cache else cfg.cache, check=False)
    scores = gather(rt, mine)
    s = summarize_scores(scores)
    return {"psnr": s["restored"]["psnr"], "ssim": s["restored"]["ssim"], "lq_psnr": s["lq"]["psnr"],
            "lq_ssim": s["lq"]["ssim"], "images": len(scores)}


def build(run: Run, data: RunData, rt: Runtime) -> tuple[nn.Module, torch.optim.Optimizer, dict[str, Any]]:
    """The model (on its device) and its optimiser: fresh, from ``init`` weights, or as the run left them."""
    cfg = run.cfg
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)  # packages that draw initial weights with numpy (ldct-benchmark's QAE)
    args = model_args(cfg, data.group.channels)
    model = build_network(args["name"], args["img_channel"], args["overrides"],
                          runtime={"backend": cfg.backend, "memory": cfg.memory})
    if cfg.init and run.resumed is None:
        load_weights(model, load_model_source(cfg.init)["model"], cfg.init)
        say(rt, f"initialised from {cfg.init}")
    model.to(rt.device)
    if cfg.compile == "on" or (cfg.compile == "auto" and rt.device.type == "cuda"):
        compile_blocks(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    if run.resumed is not None:
        model.load_state_dict(run.resumed["model"])
        optimizer.load_state_dict(run.resumed["optimizer"])
        set_rng_state(run.resumed["rng"])
        if run.resumed["world_size"] != rt.world:
            say(rt, f"note: resuming on {rt.world} processes instead of {run.resumed['world_size']}: the "
                "same samples, shared out differently")
        say(rt, f"resuming {run.out} at step {run.progress.step}")
    return model, optimizer, args


def patch_stream(run: Run, data: RunData, rt: Runtime, cached: set[str] | None = None):
    """Batches of this rank: sample n is dataset index samples + rank + world * n, so resuming continues
    the stream exactly."""
    cfg = run.cfg
    patches = PatchDataset(cfg.masks, data.train, data.group, root=data.root, patch_size=cfg.patch_size,
                           seed=cfg.seed, cache=False if cfg.no_cache else cfg.cache, cached=cached)
    if not all(patches.cached):
        missing = len(patches.cached) - sum(patches.cached)
        say(rt, f"note: {missing} of {len(patches.cached)} training images are not in an image cache, so "
            "every patch decodes the whole source files (slow for large images)")
    workers = cfg.workers if cfg.workers is not None else default_workers(rt.world)
    return iter(make_loader(patches, cfg.batch_size, workers, start=run.progress.samples, rank=rt.rank,
                            world_size=rt.world))


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Mapping[str, torch.Tensor],
               cfg: TrainConfig, device: torch.device, lr: float, amp: torch.dtype | None) -> torch.Tensor:
    """One optimisation step on a batch of patches at learning rate ``lr``; returns the (detached) loss."""
    lq = batch["lq"].to(device, non_blocking=True)  # (B, C, P, P)
    hq = batch["hq"].to(device, non_blocking=True)
    labels = batch["labels"].to(device, non_blocking=True)  # (B, P, P)
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
        pred = model(lq, labels) if takes_labels(model) else model(lq)  # region-free: no label map
    gamma = cfg.gamma if cfg.loss == "fr" else 0.0
    loss = focal_region_loss(pred.float(), hq, labels, gamma=gamma, delta=cfg.delta, norm=cfg.fr_norm)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach()


def device_fault(err: RuntimeError, run: Run, step: int, saved: int | None) -> DeviceFault:
    """A CUDA error after ``step`` steps as one line that says what is safe and the way on. CUDA errors
    are sticky: nothing more can run on the device in this process, so the run stops without saving, and
    ``last.pt`` stays as it was last written (``saved``: its step)."""
    kept = (f"{run.out / LAST} (step {saved}) is intact" if saved is not None else
            f"no {LAST} was written yet")
    return DeviceFault(f"{run.out}: the GPU failed after step {step} ({one_line(err)}); {kept}: continue "
                       "with `backend` sparse `resume` (the same results without the flex kernel)")


def is_device_fault(err: BaseException) -> bool:
    """Whether ``err`` is a CUDA error (an illegal address, a launch failure, ...) rather than a bug here."""
    accelerator = getattr(torch, "AcceleratorError", None)
    return (accelerator is not None and isinstance(err, accelerator)) or "CUDA error" in str(err)


def train(settings: Mapping[str, Any] | Run) -> dict[str, Any]:
    """Train (or resume) the run ``settings`` describe (see :meth:`rat.training.run.Run.open`).

    Returns {"step", "selection" (split, metric, step and value of best.pt: :mod:`rat.training.selection`),
    "val" (last validation summary), "out", "model" (the trained module)}.
    Raises TrainError / StoreError / ParamError with one-line reasons (StoreError lists every problem of
    the store) before the first step when the set-up is wrong.
    """
    run = settings if isinstance(settings, Run) else Run.open(settings)
    rt = setup(run.cfg.device, run.cfg.dist_timeout)
    try:
        return _train(run, rt)
    finally:
        teardown()


def _train(run: Run, rt: Runtime) -> dict[str, Any]:
    """The loop: steps, and at their intervals the loss logged, a validation, ``last.pt``."""
    cfg, progress = run.cfg, run.progress
    session = start(run, rt)
    try:  # CUDA errors surface at the next synchronisation: in a step, a log, validation or a save
        while progress.step < cfg.iters:
            session.step()
            step, final = progress.step, progress.step == cfg.iters
            if step % cfg.log_every == 0 or final:
                session.log_loss()
            if step % cfg.eval_every == 0 or final:
                session.validate()
            stop = cfg.stop_at is not None and step >= cfg.stop_at
            if step % cfg.save_every == 0 or final or stop:
                session.save_last()
            if stop:
                say(rt, f"stopped at step {step} (--stop-at); continue with --resume")
                break
    except RuntimeError as err:
        if is_device_fault(err):
            raise device_fault(err, run, progress.step, session.saved_last) from err
        raise
    return session.finish()


def start(run: Run, rt: Runtime) -> Session:
    """Everything before the first step, checked once: the ranks agree, the data and the store, the image
    cache, the model and its optimiser, the run folder and its metrics log, the patch stream."""
    cfg, progress = run.cfg, run.progress
    starts = gather(rt, [progress.step])
    if len(set(starts)) > 1:
        raise TrainError(f"{run.out}: the processes continue from different checkpoints (steps "
                         f"{', '.join(map(str, starts))} by rank): --out must be one folder that every node "
                         "sees")
    if cfg.val_split == "test":
        say(rt, "warning: validating on the test split: best.pt is chosen on the images the results are "
            "reported on, so its test scores are biased upwards (the authors' practice; default: val). The "
            "checkpoints and the model card say so.")
    data = load_data(cfg, progress=rt.main and cfg.progress)
    if not data.val:
        where = f"{cfg.val_split} split of {data.dataset.name}/{data.group.name}"
        limit = ", --val-limit 0" if cfg.val_limit == 0 else ""
        say(rt, f"warning: no validation images ({where}{limit}): nothing chooses {BEST}, so none is "
            f"written; {LAST} holds the last weights")
    if run.resumed is not None and run.resumed["provenance"].get("fingerprint") != data.provenance.get(
            "fingerprint"):
        raise TrainError(f"{cfg.masks}: not the label store this run was trained on (other provenance "
                         "fingerprint); resume with the original store")
    cached = None if cfg.no_cache else fill_cache(cfg, rt, data)
    raw, optimizer, args = build(run, data, rt)
    model = raw
    if rt.world > 1:
        model = nn.parallel.DistributedDataParallel(raw, device_ids=[rt.device] if rt.device.type == "cuda"
                                                    else None)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and rt.device.type == "cuda")
    log, history = None, []
    if rt.main:
        run.remove_leftovers()
        if cfg.overwrite and run.clear():
            say(rt, f"{run.out}: the checkpoints of the run there were deleted (--overwrite)")
        run.write_config()
        log = MetricsLog(run.out, cfg.metrics_format)
        history = log.truncate(progress.step)
        if log.tb is None and progress.step == 0:
            say(rt, f"metrics: {log.path} (TensorBoard not installed)")
    bar = tqdm(total=cfg.iters, initial=progress.step, desc="train", unit="it",
               disable=not (rt.main and cfg.progress), dynamic_ncols=True, mininterval=1.0)
    model.train()
    return Session(run, rt, data, raw, model, optimizer, args, torch.bfloat16 if bf16 else None,
                   patch_stream(run, data, rt, cached), log, history, bar,
                   saved_last=progress.step if run.resumed is not None else None,
                   loss_sum=torch.zeros((), device=rt.device), step_log=progress.step)


@dataclass
class Session:
    """A session of a run (from its start or a resume to its end): what the loop's steps share."""

    run: Run
    rt: Runtime
    data: RunData
    raw: nn.Module  # the model
    model: nn.Module  # the model as the steps call it (DistributedDataParallel under torchrun)
    optimizer: torch.optim.Optimizer
    args: dict[str, Any]  # the model's arguments, as checkpoints record them
    amp: torch.dtype | None
    batches: Any
    log: MetricsLog | None  # rank 0 only
    history: list[dict[str, Any]]
    bar: Any
    saved_last: int | None = None  # the step last.pt holds
    loss_sum: torch.Tensor | None = None
    loss_n: int = 0
    step_log: int = 0
    t0: float = field(default_factory=time.perf_counter)
    t_log: float = field(default_factory=time.perf_counter)

    def lr(self) -> float:
        cfg = self.run.cfg
        return lr_at(self.run.progress.step, cfg.lr, cfg.min_lr, cfg.iters)

    def step(self) -> None:
        """One optimisation step on the next batch."""
        cfg, progress = self.run.cfg, self.run.progress
        self.loss_sum += train_step(self.model, self.optimizer, next(self.batches), cfg, self.rt.device,
                                    self.lr(), self.amp)
        self.loss_n += 1
        progress.step += 1
        progress.samples += cfg.batch_size * self.rt.world
        self.bar.update()

    def log_loss(self) -> None:
        """The mean training loss since the last log (over every rank), with the speed."""
        step, rt = self.run.progress.step, self.rt
        mean = float(mean_over_ranks(rt, self.loss_sum)) / self.loss_n
        now = time.perf_counter()
        if rt.main:
            cfg = self.run.cfg
            lr = lr_at(step - 1, cfg.lr, cfg.min_lr, cfg.iters)  # the last step's
            speed = (step - self.step_log) / max(now - self.t_log, 1e-9)
            self.record({"step": step, "kind": "train", "loss": mean, "lr": lr, "it_s": speed,
                         "elapsed": now - self.t0})
            self.bar.set_postfix(loss=f"{mean:.4g}", lr=f"{lr:.3g}", refresh=False)
        self.loss_sum.zero_()
        self.loss_n, self.t_log, self.step_log = 0, now, step

    def validate(self) -> None:
        """Whole validation images; ``best.pt`` when the selected metric improves (:mod:`selection`)."""
        run, rt, progress = self.run, self.rt, self.run.progress
        val = progress.val = validation(self.raw, self.data, run.cfg, rt, self.amp)
        if val is None:
            return
        if rt.main:
            self.record({"step": progress.step, "kind": "val", "split": run.cfg.val_split, **val,
                         "elapsed": time.perf_counter() - self.t0})
            say(rt, f"step {progress.step}: val PSNR {val['psnr']:.4f} dB, SSIM {val['ssim']:.4f} "
                f"(LQ {val['lq_psnr']:.4f} / {val['lq_ssim']:.4f})")
        if run.selection.improves(val, progress.best):
            progress.best, progress.best_step = run.selection.value(val), progress.step
            if rt.main:
                if not (run.out / LAST).is_file():  # never best.pt alone (see rat.training.run)
                    self.save(LAST)
                self.save(BEST)
        if rt.main:
            plot_curves(self.history, run.out / "curves.png", progress.best_step)

    def save_last(self) -> None:
        if self.rt.main:
            self.save(LAST)
        barrier(self.rt)

    def save(self, name: str) -> None:
        self.run.save(name, self.run.state(self.raw, self.optimizer, self.args, self.rt.world, self.lr(),
                                           self.data))
        if name == LAST:
            self.saved_last = self.run.progress.step

    def record(self, entry: dict[str, Any]) -> None:
        self.log.append(entry)
        self.history.append(entry)

    def finish(self) -> dict[str, Any]:
        """The summary of the run (see :func:`train`); the curves and the log closed."""
        run, progress = self.run, self.run.progress
        self.bar.close()
        if self.rt.main:
            plot_curves(self.history, run.out / "curves.png", progress.best_step)
            self.log.close()
        return {"step": progress.step, "selection": run.selection.record(progress.best_step, progress.best,
                                                                         run.cfg.val_split),
                "val": progress.val, "out": str(run.out), "model": self.raw}
