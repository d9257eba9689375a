"""`rat-train`: train RAT from images plus precomputed label maps; eval and restore verbs.

    rat-train --masks store.zarr --dataset aapm --root /data/aapm --out runs/aapm      # train
    rat-train eval --checkpoint runs/aapm/best.pt --masks store.zarr --root /data/aapm
    rat-train restore --checkpoint runs/aapm/best.pt --masks store.zarr --root /data/aapm --out restored/

Several GPUs: `torchrun --nproc_per_node 4 $(which rat-train) --masks ...`.
"""

from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

import click

from rat.training.evaluate import OVERLAP, TILE
from rat.training.trainer import CHOICES, TrainConfig

#: Help of every training option; the defaults shown come from TrainConfig.
TRAIN_HELP = {
    "masks": "Label store made by `rat-precompute masks` (directory, .zip or fsspec URL).",
    "dataset": "Dataset name (tma, aapm, pet, sample) or path to a definition .toml.",
    "root": "Data root the dataset's paths are relative to.",
    "out": "Run directory: checkpoints, metrics, curves.",
    "index": "Per-image index file (default: where `rat-precompute manifest` writes it).",
    "group": "Image group to train on (required when the dataset has several).",
    "patch_size": "Training patch edge in pixels (default: the group's patch_size).",
    "val_split": "Split validated on whole images.",
    "val_limit": "Validate on the first N images of the split (by id); default all.",
    "model": "Model: rat (the paper's) or rat-small (CPU demos).",
    "width": "Override the model's width (channels of its first level).",
    "attention": "Attention of the latent layers: rmsa (region), or the wmsa/msa ablations.",
    "backend": "Region attention kernel (all give the same result): auto, dense, sparse, flex.",
    "init": "Start from these weights: a rat-train checkpoint or a bare state dict (the authors' code).",
    "loss": "Loss: fr (focal region) or l1.",
    "gamma": "Focal region loss gamma (weight of the worst regions).",
    "delta": "Focal region loss delta (exponent of the region error).",
    "iters": "Training steps (the cosine schedule spans them).",
    "batch_size": "Patches per step and process.",
    "lr": "Initial learning rate (Adam).",
    "min_lr": "Final learning rate of the cosine schedule.",
    "beta1": "Adam beta1.",
    "beta2": "Adam beta2.",
    "grad_clip": "Clip the gradient norm to this value (0: off).",
    "precision": "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32.",
    "seed": "Seed of the model initialisation and of the patch stream.",
    "device": "auto, cpu or cuda.",
    "workers": "DataLoader worker processes per GPU/process.",
    "log_every": "Log the mean training loss every N steps.",
    "eval_every": "Validate on whole images every N steps (and keep the best checkpoint).",
    "save_every": "Write <out>/last.pt every N steps.",
    "tile": "Tile edge for whole-image inference.",
    "overlap": "Overlap of neighbouring tiles.",
    "metrics_format": "Metrics file: jsonl or csv.",
    "progress": "Show a progress bar.",
    "resume": "Continue the run in --out from its last.pt, exactly where it stopped (fresh if none).",
    "stop_at": "Save and stop after this step (time-limited jobs); continue later with --resume.",
}


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _train_options(func):
    """One option per TrainConfig field, default None so that only what the user set is passed on."""
    defaults = TrainConfig()
    for f in reversed(fields(TrainConfig)):
        flag = f"--{f.name.replace('_', '-')}"
        default = getattr(defaults, f.name)
        text = TRAIN_HELP[f.name] + ("" if default in (None, "") else f"  [default: {default}]")
        if f.name == "resume":
            func = click.option(flag, f.name, is_flag=True, default=None, help=text)(func)
        elif f.name == "progress":
            func = click.option("--progress/--no-progress", f.name, default=None, help=text)(func)
        else:
            base = str(f.type).split(" |")[0]  # "int | None" -> "int"
            kind = click.Choice(CHOICES[f.name]) if f.name in CHOICES else {"int": int, "float": float}.get(
                base, str)
            func = click.option(flag, f.name, type=kind, default=None, help=text)(func)
    return func


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rat")
@_train_options
@click.pass_context
def main(ctx: click.Context, **settings) -> None:
    """Train and evaluate the Region Attention Transformer.

    Without a command: train on the training split, e.g.
    `rat-train --masks store.zarr --dataset aapm --root DIR --out RUN_DIR`. The store is checked
    against the dataset first (every image needs a complete label map made from its LQ file).
    """
    given = {k: v for k, v in settings.items() if v is not None}
    if ctx.invoked_subcommand is not None:
        if given:
            _fail(f"training options (--{next(iter(given)).replace('_', '-')}) go without a command")
        return
    if not given:
        click.echo(ctx.get_help())
        return
    from rat.shared.store import StoreError
    from rat.training.trainer import TrainError, make_config, train

    try:
        summary = train(make_config(given))
    except (TrainError, StoreError, ValueError, OSError) as err:
        _fail(str(err))
    best = summary["best_psnr"]
    click.echo(f"done: {summary['step']} steps in {summary['out']}"
               + (f"; best validation PSNR {best:.4f} dB" if best > float("-inf") else ""))


# ---------------------------------------------------------------------------------------------------
# eval and restore


def _checkpoint_options(func):
    options = [
        click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="A rat-train checkpoint (best.pt, last.pt) or a bare state dict (authors' code)."),
        click.option("--masks", default=None,
                     help="Label store (default: the checkpoint's; required for bare state dicts)."),
        click.option("--dataset", default=None, help="Dataset name or .toml (default: the checkpoint's)."),
        click.option("--root", default=None, help="Data root (default: the checkpoint's)."),
        click.option("--index", default=None, help="Per-image index file (default: the documented place)."),
        click.option("--group", default=None, help="Image group (default: the checkpoint's)."),
        click.option("--split", default="test", show_default=True, help="Split to run on (or all)."),
        click.option("--limit", type=int, default=None, help="At most N images (first by id)."),
        click.option("--model", "model_name", default="rat", show_default=True,
                     help="Model of a bare state dict (rat or rat-small); checkpoints name their own."),
        click.option("--attention", type=click.Choice(CHOICES["attention"]), default=None,
                     help="Attention of a bare state dict's model (default rmsa)."),
        click.option("--backend", type=click.Choice(CHOICES["backend"]), default="auto", show_default=True,
                     help="Region attention kernel (same results)."),
        click.option("--tile", type=int, default=None, help=f"Tile edge for whole images (default {TILE})."),
        click.option("--overlap", type=int, default=None, help=f"Overlap of tiles (default {OVERLAP})."),
        click.option("--device", type=click.Choice(CHOICES["device"]), default="auto", show_default=True,
                     help="Where the model runs."),
        click.option("--bf16", is_flag=True, help="bf16 autocast (CUDA); default float32."),
        click.option("--progress/--no-progress", default=True, help="Show a progress bar."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _prepare(opts: dict):
    """Checkpoint, model on its device, dataset group, entries, open store; all checked."""
    import torch

    from rat.precompute.runner import select
    from rat.shared.manifest import load_dataset, load_index
    from rat.shared.store import open_store
    from rat.training.data import check_store
    from rat.training.trainer import load_checkpoint, model_from_checkpoint, pick_group, setup

    ck = load_checkpoint(opts["checkpoint"])
    saved = {} if ck.get("bare") else ck["config"]
    for key in ("masks", "dataset", "root", "index", "group"):
        if opts[key] is None and saved.get(key):
            opts[key] = saved[key]
    for key in ("masks", "dataset", "root"):
        if not opts[key]:
            _fail(f"--{key} is required (the checkpoint does not name one)")
    ds = load_dataset(opts["dataset"])
    group = pick_group(ds, opts["group"])
    model = model_from_checkpoint(ck, name=opts["model_name"], attention=opts["attention"],
                                  backend=opts["backend"])
    if model.intro.in_channels != group.channels:
        _fail(f"{opts['checkpoint']}: model takes {model.intro.in_channels} channel(s), "
              f"group {group.name!r} has {group.channels}")
    mine = [e for e in load_index(ds, opts["root"], opts["index"]) if e.group == group.name]
    entries = select(mine, opts["split"], None, opts["limit"])
    if not entries:
        _fail(f"no {opts['split']} images of group {group.name!r} in the index")
    store = open_store(opts["masks"])
    check_store(store, entries)
    rt = setup(opts["device"])
    model.to(rt.device)
    kwargs = {k: opts[k] for k in ("tile", "overlap") if opts[k] is not None}
    if opts["bf16"]:
        kwargs["autocast"] = torch.bfloat16
    return ck, model, group, entries, store, kwargs


def _errors():
    from rat.shared.store import StoreError
    from rat.training.trainer import TrainError

    return (TrainError, StoreError, ValueError, OSError)


@main.command("eval")
@_checkpoint_options
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per-image CSV to write (default: eval_<group>_<split>.csv beside the checkpoint).")
@click.option("--figure", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG of one image: LQ | restored | HQ | regions.")
@click.option("--figure-id", default=None, help="Image of --figure (default: the first by id).")
def eval_cmd(csv_path, figure, figure_id, **opts):
    """PSNR and SSIM of a checkpoint on whole images (tiled), against the LQ input as baseline.

    Prints mean +- std over images and writes one CSV row per image plus mean and std rows.
    """
    import torch

    from rat.training.data import load_full
    from rat.training.evaluate import evaluate, format_table, predict, save_figure, write_scores_csv

    try:
        ck, model, group, entries, store, kwargs = _prepare(opts)
        scores = evaluate(model, entries, opts["root"], store, group, progress=opts["progress"], **kwargs)
        csv_path = csv_path or Path(opts["checkpoint"]).parent / f"eval_{group.name}_{opts['split']}.csv"
        write_scores_csv(scores, csv_path)
        if figure is not None:
            by_id = {e.id: e for e in entries}
            entry = by_id.get(figure_id or entries[0].id)
            if entry is None:
                _fail(f"--figure-id {figure_id}: not among the evaluated images")
            lq, hq, labels = load_full(store, entry, opts["root"], group)
            lq, hq = torch.as_tensor(lq), torch.as_tensor(hq)
            lab = torch.as_tensor(labels) if model.attention == "rmsa" else None
            restored = predict(model, lq, lab, **kwargs)
            score = next(s for s in scores if s.id == entry.id)
            save_figure(figure, lq, restored, hq, labels, group, score, title=f"{group.name}: {entry.id}")
    except _errors() as err:
        _fail(str(err))
    step = "" if ck.get("bare") else f" (step {ck['step']})"
    click.echo(f"{group.name}, split {opts['split']}, {Path(opts['checkpoint']).name}{step}")
    click.echo(format_table(scores))
    click.echo(f"per-image metrics: {csv_path}" + (f"\nfigure: {figure}" if figure else ""))


@main.command("restore")
@_checkpoint_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the restored images (<out>/<group>/<id>.<source extension>).")
def restore_cmd(out, **opts):
    """Restore whole images and write them in the source format and dtype.

    DICOM keeps the LQ file's tags with new pixel data; PNG and TIFF keep their bit depth; slices
    of volumes are written as float32 TIFF. Exits non-zero if any image failed (the others are kept).
    """
    from rat.training.evaluate import restore

    try:
        _, model, group, entries, store, kwargs = _prepare(opts)
        written = restore(model, entries, opts["root"], store, group, out, progress=opts["progress"],
                          **kwargs)
    except _errors() as err:
        _fail(str(err))
    failed = [w for w in written if w.path is None]
    click.echo(f"{len(written) - len(failed)} restored into {out}, {len(failed)} failed")
    for w in failed:
        click.echo(f"  FAILED {w.id}: {w.reason}")
    if failed:
        sys.exit(1)
