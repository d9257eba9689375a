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

from rat.shared import DISTRIBUTION, plugins
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
from rat.shared.regions import generator_names
from rat.training.choices import ATTENTIONS, BACKENDS, MODEL_NAMES, OVERLAP, TILE
from rat.training.cli_tables import models_cmd, table_cmd
from rat.training.config import CHOICES, TrainConfig, help_text
from rat.training.model.registry import model_names
from rat.training.selection import Selection


def _train_options(func):
    """One option per TrainConfig field, default None so that only what the user set is passed on."""
    defaults = TrainConfig()
    for f in reversed(fields(TrainConfig)):
        name = flag(f.name)
        default = getattr(defaults, f.name)
        text = help_text(f.name) + ("" if default in (None, "") else f"  [default: {default}]")
        if f.name == "progress":
            func = click.option("--progress/--no-progress", f.name, default=None, help=text)(func)
        elif f.name == "model":
            func = click.option(name, f.name, type=click.Choice(model_names()), default=None, help=text)(func)
        elif f.name == "model_params":
            func = click.option("--model-param", f.name, multiple=True, metavar="NAME=VALUE", default=None,
                                help=help_text(f.name), callback=_model_params)(func)
        elif f.type in (bool, "bool"):
            func = click.option(name, f.name, is_flag=True, default=None, help=help_text(f.name))(func)
        else:
            base = str(f.type).split(" |")[0]  # "int | None" -> "int"
            kind = (click.Choice(CHOICES[f.name]) if f.name in CHOICES
                    else {"int": int, "float": float}.get(base, str))
            func = click.option(name, f.name, type=kind, default=None, help=text)(func)
    return func


def _model_params(ctx, param, values) -> dict | None:
    """--model-param NAME=VALUE ... -> {NAME: VALUE} (JSON where it parses); None when none given."""
    try:
        return dict(plugins.parse_assignment(text) for text in values or ()) or None
    except ValueError as err:
        raise click.BadParameter(str(err), ctx, param) from None


@click.group(invoke_without_command=True, context_settings=CONTEXT)
@click.version_option(package_name=DISTRIBUTION)
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
    from rat.training.trainer import train

    with cli_errors({"model_params": "--model-param"}):
        summary = train(given)
    chosen = summary["selection"]
    click.echo(f"done: {summary['step']} steps in {summary['out']}"
               + (f"; best.pt: step {chosen['step']}, {chosen['split']} "
                  f"{Selection(chosen['metric']).describe(chosen['value'])}" if chosen["step"] else ""))


# ---------------------------------------------------------------------------------------------------
# eval, restore, export


def _checkpoint_options(func):
    options = [
        click.option("--checkpoint", required=True, type=click.Path(exists=True, path_type=Path),
                     help="A rat-train checkpoint (best.pt, last.pt), a model folder of `rat-train "
                          "export`, or a bare state dict (authors' code; then name --dataset)."),
        masks_option(required=False, help="Label store (default: the checkpoint's)."),
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


def _restorer(opts: dict):
    from rat.training.inference.restorer import load_restorer

    return load_restorer(opts["checkpoint"], dataset=opts["dataset"], group=opts["group"],
                         model_name=opts["model_name"], attention=opts["attention"], backend=opts["backend"],
                         device=opts["device"], tile=opts["tile"], overlap=opts["overlap"], bf16=opts["bf16"],
                         clip_values=opts.get("clip_values", False))


def _split(opts: dict, restorer):
    """(store, entries, root) of the dataset split to evaluate or restore: the checkpoint's store and data
    unless named, the split, shard and limit asked for; the store checked for them."""
    from rat.training.inference.evaluate import split_entries

    return split_entries(restorer, opts["masks"], opts["split"], dataset=opts["dataset"], root=opts["root"],
                         index=opts["index"], shard=opts["shard"], limit=opts["limit"])


def _units_table(scores, group) -> str | None:
    """The table per split unit (e.g. patient), when the dataset's unit is not the image."""
    from rat.training.inference.scores import format_table, per_unit

    if not any(s.unit for s in scores):
        return None
    return f"per {group.split.unit}:\n" + format_table(per_unit(scores), what=f"{group.split.unit}s")


@main.command("eval")
@_checkpoint_options
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per-image CSV to write (default: eval_<group>_<split>.csv beside the checkpoint).")
@click.option("--figure", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG of one image: LQ | restored | HQ | regions.")
@click.option("--figure-id", default=None, help="Image of --figure (default: the first by id).")
def eval_cmd(csv_path, figure, figure_id, **opts):
    """PSNR and SSIM of a checkpoint on whole images (tiled), against the LQ input as baseline.

    Scores the test split by default (once, after training: checkpoints are chosen on val). Prints mean +-
    std over images, and over patients where the dataset splits by patient (the independent samples), and
    writes one CSV row per image plus mean and std rows.
    """
    import torch

    from rat.training.data import load_full
    from rat.training.figures import save_figure
    from rat.training.inference.evaluate import evaluate
    from rat.training.inference.scores import format_table, write_scores_csv
    from rat.training.inference.tiling import model_labels, predict

    with cli_errors():
        restorer = _restorer(opts)
        store, entries, root = _split(opts, restorer)
        model, group = restorer.model, restorer.group
        kwargs = {"tile": restorer.tile, "overlap": restorer.overlap, "autocast": restorer.autocast}
        scores = evaluate(model, entries, root, store, group, progress=opts["progress"], **kwargs)
        where = Path(opts["checkpoint"])
        folder = where if where.is_dir() else where.parent
        csv_path = csv_path or folder / f"eval_{group.name}_{opts['split']}.csv"
        write_scores_csv(scores, csv_path)
        if figure is not None:
            entry = {e.id: e for e in entries}.get(figure_id or entries[0].id)
            if entry is None:
                fail(f"--figure-id {figure_id}: not among the evaluated images")
            lq, hq, labels = load_full(store, entry, root, group)
            lq, hq = torch.as_tensor(lq), torch.as_tensor(hq)
            restored = predict(model, lq, model_labels(model, labels), **kwargs)
            score = next(s for s in scores if s.id == entry.id)
            save_figure(figure, lq, restored, hq, labels, group, score, title=f"{group.name}: {entry.id}")
    step = "" if restorer.meta["step"] is None else f" (step {restorer.meta['step']})"
    click.echo(f"{group.name}, split {opts['split']}, {Path(opts['checkpoint']).name}{step}")
    click.echo(format_table(scores))
    units = _units_table(scores, group)
    if units:
        click.echo(units)
    if restorer.meta["config"].get("val_split") == "test":
        click.echo("note: this checkpoint was selected on the test split: these scores are biased upwards")
    click.echo(f"per-image metrics: {csv_path}" + (f"\nfigure: {figure}" if figure else ""))


@main.command("compare")
@click.argument("models", nargs=-1, required=True, metavar="RUN_OR_CHECKPOINT...")
@click.option("--baseline", default=None, help="Model the others are paired against (default: the first).")
@click.option("--by", type=click.Choice(["image", "unit"]), default="image", show_default=True,
              help="Pair per image, or per split unit (a patient: the mean of its images).")
@click.option("--split", type=click.Choice(["test", "val"]), default="test", show_default=True,
              help="Images to score (the test split: after training, once).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data root (default: as for each model's store).")
@click.option("--masks", multiple=True, metavar="STORE",
              help="Label store to score with (default: each model's own): once for every model, or once "
                   "per model in order.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the per-image (per-unit) table of every model's PSNR and SSIM.")
@click.option("--figure", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a box plot of the paired differences to the baseline.")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Bootstrap resamples of the confidence intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where the models run.")
@progress_option
def compare_cmd(models, baseline, by, split, root, masks, csv_path, figure, resamples, seed, device,
                progress):
    """Score models on the same test images and compare them, paired.

    RUN_OR_CHECKPOINT: a run folder (its best.pt), a checkpoint, or an exported model folder. Each model is
    scored with the label maps of its own store (models trained on other region sources keep theirs); the
    images must be the same. Prints PSNR and SSIM (mean +- std) of the LQ input and every model, and for each
    model against the baseline the mean paired difference with its 95 % bootstrap confidence interval and the
    Wilcoxon signed-rank p-value.
    """
    from rat.training.inference.compare import (
        box_plot,
        check_comparable,
        check_distinct,
        compare,
        few_pairs,
        format_comparison,
        model_file,
        model_names,
        write_comparison_csv,
    )
    from rat.training.inference.evaluate import evaluate_split
    from rat.training.inference.restorer import load_restorer

    if len(masks) not in (0, 1, len(models)):
        fail(f"--masks: given {len(masks)} times for {len(models)} models: once for all, or once per model")
    stores = list(masks) * len(models) if len(masks) == 1 else list(masks) or [None] * len(models)
    with cli_errors():
        files = [model_file(m) for m in models]
        names = model_names(files)
        restorers = [load_restorer(f, device=device) for f in files]
        check_distinct(names, files, restorers)
        runs = []
        for name, r, store in zip(names, restorers, stores, strict=True):
            if progress:
                click.echo(f"scoring {name} ...", err=True)
            runs.append(evaluate_split(r, store, split=split, root=root, progress=progress))
            check_comparable(names[: len(runs)], restorers[: len(runs)], runs)
        result = compare(names, runs, baseline, by, resamples, seed)
        if csv_path:
            write_comparison_csv(result, csv_path)
        if figure:
            box_plot(result, figure)
    first = restorers[0]
    click.echo(f"{first.dataset.name}/{first.group.name}, split {split}")
    click.echo(format_comparison(result))
    warning = few_pairs(result)
    if warning:
        click.echo(warning)
    for name, r in zip(names, restorers, strict=True):
        if r.meta["config"].get("val_split") == "test":
            click.echo(f"note: {name} was selected on the test split: its scores are biased upwards")
    for label, path in (("per-image table", csv_path), ("box plot", figure)):
        if path:
            click.echo(f"{label}: {path}")


@main.command("restore")
@click.argument("inputs", nargs=-1, metavar="[INPUT]...")
@_checkpoint_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the restored scans (each under its input's name).")
@click.option("--sam-checkpoint", envvar="RAT_SAM_CHECKPOINT", type=click.Path(path_type=Path), default=None,
              help="SAM-family weights for regions computed here (or RAT_SAM_CHECKPOINT); must be those "
                   "the model was trained with.")
@click.option("--generator", type=click.Choice(generator_names()), default=None,
              help="Compute regions with another generator than the model was trained with (a note says so).")
@click.option("--save-regions", is_flag=True,
              help="Also write the label map the model saw beside each output: NIfTI for volumes and DICOM "
                   "(one label volume per DICOM series, in its geometry as ITK reads it), PNG otherwise.")
@click.option("--clip-values", is_flag=True,
              help="Clip input values outside the model's value range (its group's value_range; 0..255 for "
                   "8-bit groups) instead of refusing the input.")
def restore_cmd(inputs, out, sam_checkpoint, generator, save_regions, **opts):
    """Restore scans and write them in their own standard formats.

    INPUT: image files (DICOM, PNG, TIFF), folders holding a DICOM series, NIfTI volumes, or folders or
    glob patterns of these. Without INPUT: the dataset split of the checkpoint's store (--split, default
    test). Regions come from --masks STORE when it holds a label map of the same LQ bytes, else they are
    computed with the generator and SAM window the model was trained with. DICOM inputs become a new
    derived series in the same study; NIfTI a volume with the source's shape, affine and units; PNG and
    TIFF keep their bit depth. The DICOM files of a series folder are restored one by one and written as
    one derived series: a file that cannot be restored is named and the rest written; DICOM files without
    an image (DICOMDIR, reports) are skipped with a note. Bad inputs are reported and skipped; the summary
    counts the files written; the exit status is 1 when something asked for was not written.
    """
    from rat.shared.jobs import failed, notes
    from rat.training.inference.inputs import collect_scans, scans_of_entries
    from rat.training.inference.region_source import RegionSource
    from rat.training.inference.restore_scans import restore_scans

    given = []
    with cli_errors({"checkpoint": "--sam-checkpoint"}):  # the SAM weights' parameter
        restorer = _restorer(opts)
        if inputs:
            from rat.shared.store import open_store

            volume = restorer.group.volume
            scans, given = collect_scans(list(inputs), volume.slice_axis % 3 if volume else 2)
            store = open_store(opts["masks"]) if opts["masks"] else None
        else:
            store, entries, root = _split(opts, restorer)
            scans = scans_of_entries(entries, root)
        regions = RegionSource(restorer, store, generator, sam_checkpoint, opts["device"], save=save_regions)
        outcomes = restore_scans(restorer, scans, regions, out, save_regions, opts["progress"])
    for note in regions.notes:
        click.echo(note)
    outcomes = given + outcomes
    by = {s: [o for o in outcomes if o.status == s] for s in ("done", "failed", "skipped")}
    skipped = f", {len(by['skipped'])} skipped (no image)" if by["skipped"] else ""
    click.echo(f"{len(by['done'])} restored into {out}, {len(by['failed'])} failed{skipped}")
    for o in by["failed"]:
        click.echo(f"  FAILED {o.image_id}: {o.reason}")
    for o in by["skipped"]:
        click.echo(f"  skipped {o.image_id}: {o.reason}")
    for line in notes(outcomes):
        click.echo(line)
    exit_status(failed(outcomes))


@main.command("export")
@click.option("--checkpoint", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A rat-train checkpoint (best.pt, last.pt).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write: model.safetensors, config.json, README.md (model card).")
@click.option("--overwrite", is_flag=True, help="Replace an existing folder.")
def export_cmd(checkpoint, out, overwrite):
    """Write a shareable model folder: the weights (safetensors), their configuration and a model card.

    `restore`, `eval` and `rat-train --init` take the folder in place of a checkpoint; loading it never
    unpickles anything.
    """
    from rat.training.model_folder import export_model

    with cli_errors():
        folder = export_model(checkpoint, out, overwrite=overwrite)
    click.echo(f"wrote {folder}: model.safetensors, config.json, README.md")


main.add_command(models_cmd)
main.add_command(table_cmd)
