"""`rat-train`: train RAT from images plus precomputed label maps; eval and restore verbs.

    rat-train --masks aapm.zarr --out runs/aapm                                  # train
    rat-train eval --checkpoint runs/aapm/best.pt                                # the run's store and data
    rat-train restore --checkpoint runs/aapm/best.pt --out restored/

Several GPUs: `torchrun --nproc_per_node 4 $(which rat-train) --masks ...`. Every command imports torch
when it runs, not before: `--help` is instant.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from rat.shared.cli import (
    CONTEXT,
    cli_errors,
    dataset_options,
    exit_status,
    fail,
    flag,
    masks_option,
    progress_option,
    selection_options,
)
from rat.shared.devices import DEVICES
from rat.training.config import CHOICES, TrainConfig, help_text
from rat.training.options import ATTENTIONS, BACKENDS, MODEL_NAMES, OVERLAP, TILE


def _train_options(func):
    """One option per TrainConfig field, default None so that only what the user set is passed on."""
    defaults = TrainConfig()
    for f in reversed(fields(TrainConfig)):
        name = flag(f.name)
        default = getattr(defaults, f.name)
        text = help_text(f.name) + ("" if default in (None, "") else f"  [default: {default}]")
        if f.name == "progress":
            func = click.option("--progress/--no-progress", f.name, default=None, help=text)(func)
        elif f.type in (bool, "bool"):
            func = click.option(name, f.name, is_flag=True, default=None, help=help_text(f.name))(func)
        else:
            base = str(f.type).split(" |")[0]  # "int | None" -> "int"
            kind = (click.Choice(CHOICES[f.name]) if f.name in CHOICES
                    else {"int": int, "float": float}.get(base, str))
            func = click.option(name, f.name, type=kind, default=None, help=text)(func)
    return func


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.version_option(package_name="rat")
@_train_options
@click.pass_context
def main(ctx: click.Context, **settings) -> None:
    """Train and evaluate the Region Attention Transformer.

    Without a command: train on the training split, e.g. `rat-train --masks tma.zarr --out runs/tma`.
    The store names the dataset, its index and its groups; the data root comes from --root, else
    $RAT_DATA_ROOT/<dataset>, else the definition, else the store's own if it exists here. Before the
    first step every image is checked: a complete, intact label map made from its LQ file, and LQ and HQ
    files that are the ones the store was made from.
    """
    given = {k: v for k, v in settings.items() if v is not None}
    if ctx.invoked_subcommand is not None:
        if given:
            fail(f"training options ({flag(next(iter(given)))}) go without a command")
        return
    if not given:
        click.echo(ctx.get_help())
        return
    from rat.training.config import make_config
    from rat.training.trainer import train

    with cli_errors():
        summary = train(make_config(given))
    best = summary["best_psnr"]
    click.echo(f"done: {summary['step']} steps in {summary['out']}"
               + (f"; best validation PSNR {best:.4f} dB" if best > float("-inf") else ""))


# ---------------------------------------------------------------------------------------------------
# eval and restore


def _checkpoint_options(func):
    options = [
        click.option("--checkpoint", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="A rat-train checkpoint (best.pt, last.pt) or a bare state dict (authors' code)."),
        masks_option(required=False, help="Label store (default: the checkpoint's; required for bare "
                                          "state dicts)."),
        dataset_options(required=False, root_required=False),
        click.option("--group", default=None, help="Image group (default: the checkpoint's)."),
        selection_options(split_default="test"),
        click.option("--model", "model_name", type=click.Choice(MODEL_NAMES), default="rat",
                     show_default=True, help="Model of a bare state dict; checkpoints name their own."),
        click.option("--attention", type=click.Choice(ATTENTIONS), default=None,
                     help="Attention of a bare state dict's model (default rmsa)."),
        click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                     help="Region attention kernel (same results)."),
        click.option("--tile", type=click.IntRange(min=16), default=TILE, show_default=True,
                     help="Tile edge for whole images."),
        click.option("--overlap", type=click.IntRange(min=0), default=OVERLAP, show_default=True,
                     help="Overlap of neighbouring tiles."),
        click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                     help="Where the model runs."),
        click.option("--bf16", is_flag=True, help="bf16 autocast (CUDA); default float32."),
        progress_option,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _prepare(opts: dict):
    """Checkpoint, model on its device, dataset group, entries, open store and data root; all checked."""
    import torch

    from rat.shared.datasets import pick_group
    from rat.shared.index import parse_shard, select
    from rat.shared.store import open_store
    from rat.shared.store_dataset import dataset_for
    from rat.training.checkpoint import load_checkpoint, model_from_checkpoint
    from rat.training.data import check_store
    from rat.training.distributed import setup

    ck = load_checkpoint(opts["checkpoint"])
    saved = {} if ck.get("bare") else ck["config"]
    for key in ("masks", "dataset", "root", "index", "group"):
        if opts[key] is None and saved.get(key):
            opts[key] = saved[key]
    if not opts["masks"]:
        fail("--masks is required (the checkpoint does not name a label store)")
    store = open_store(opts["masks"])
    ds, index, root = dataset_for(store, opts["dataset"], opts["root"], opts["index"])
    group = pick_group(ds, opts["group"])
    model = model_from_checkpoint(ck, name=opts["model_name"], attention=opts["attention"],
                                  backend=opts["backend"])
    if model.intro.in_channels != group.channels:
        fail(f"{opts['checkpoint']}: model takes {model.intro.in_channels} channel(s), "
             f"group {group.name!r} has {group.channels}")
    mine = [e for e in index if e.group == group.name]
    entries = select(mine, opts["split"], parse_shard(opts["shard"]), opts["limit"])
    if not entries:
        fail(f"no {opts['split']} images of group {group.name!r} in the index")
    check_store(store, entries)
    rt = setup(opts["device"])
    model.to(rt.device)
    kwargs = {"tile": opts["tile"], "overlap": opts["overlap"]}
    if not 0 <= opts["overlap"] < opts["tile"]:
        fail(f"--overlap {opts['overlap']}: must be smaller than --tile {opts['tile']}")
    if opts["bf16"]:
        kwargs["autocast"] = torch.bfloat16
    opts["root"] = root
    return ck, model, group, entries, store, kwargs


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
    from rat.training.figures import save_figure
    from rat.training.inference.evaluate import evaluate
    from rat.training.inference.scores import format_table, write_scores_csv
    from rat.training.inference.tiling import model_labels, predict

    with cli_errors():
        ck, model, group, entries, store, kwargs = _prepare(opts)
        scores = evaluate(model, entries, opts["root"], store, group, progress=opts["progress"], **kwargs)
        csv_path = csv_path or Path(opts["checkpoint"]).parent / f"eval_{group.name}_{opts['split']}.csv"
        write_scores_csv(scores, csv_path)
        if figure is not None:
            entry = {e.id: e for e in entries}.get(figure_id or entries[0].id)
            if entry is None:
                fail(f"--figure-id {figure_id}: not among the evaluated images")
            lq, hq, labels = load_full(store, entry, opts["root"], group)
            lq, hq = torch.as_tensor(lq), torch.as_tensor(hq)
            restored = predict(model, lq, model_labels(model, labels), **kwargs)
            score = next(s for s in scores if s.id == entry.id)
            save_figure(figure, lq, restored, hq, labels, group, score, title=f"{group.name}: {entry.id}")
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
    from rat.shared.batch import failed
    from rat.training.inference.restore import restore

    with cli_errors():
        _, model, group, entries, store, kwargs = _prepare(opts)
        outcomes = restore(model, entries, opts["root"], store, group, out, progress=opts["progress"],
                           **kwargs)
    bad = [o for o in outcomes if o.status == "failed"]
    click.echo(f"{len(outcomes) - len(bad)} restored into {out}, {len(bad)} failed")
    for o in bad:
        click.echo(f"  FAILED {o.image_id}: {o.reason}")
    exit_status(failed(outcomes))
