"""`rat-train models` (the models `--model` takes) and `rat-train table` (RAT and its baselines by one
protocol: the paper's tables); registered on `rat-train` by :mod:`rat.training.cli`."""

from __future__ import annotations

from pathlib import Path

import click

from rat.shared.cli import cli_errors, fail, masks_option, progress_option
from rat.shared.devices import DEVICES
from rat.training.model.registry import model_names


@click.command("models")
@click.argument("name", required=False)
def models_cmd(name: str | None):
    """List the models `--model` takes: name, package and version (or what to install), class, and whether
    it takes label maps. With NAME: that model's parameters (`--model-param NAME=VALUE`) and their
    defaults."""
    from rat.shared.plugins import parameters
    from rat.training.model.registry import install_hint, make_model, model_class, plugin_origins

    with cli_errors({"model": "NAME"}):
        if name is not None:
            known, complete = parameters(model_class(name))
            for key, default in known.items():
                click.echo(f"{key:<24} {default!r}")
            if not complete:
                click.echo(f"(model {name!r} may take other parameters too)")
            return
        origins = plugin_origins()
        for name in model_names():
            model = make_model(name)
            prov = model.provenance()
            where = (f"{prov.get('package')} {prov['version']}" if prov.get("version")
                     else f"not installed: {install_hint(model)}")
            labels = "label maps" if model.uses_labels else "region-free"
            extra = f"  [plug-in: {origins[name]}]" if name in origins else ""
            click.echo(f"{name:<12} {labels:<11} {prov.get('class')}  ({where}){extra}")


@click.command("table")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Table recipe (TOML): [train] settings of every row, [models.<label>] with model and "
                   "params.")
@click.option("--models", default=None, metavar="NAME,...",
              help="Rows by model name, default parameters (instead of, or after, the recipe's).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder of the table: runs/<row>/, table.csv, table.md, table.png.")
@masks_option(required=False, help="Label store (default: the recipe's `masks`).")
@click.option("--group", default=None, help="Image group (required when the dataset has several).")
@click.option("--root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Data root (default: as for the store).")
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Training steps of every row.")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Patches per step.")
@click.option("--patch-size", type=click.IntRange(min=8), default=None, help="Training patch edge.")
@click.option("--lr", type=float, default=None, help="Initial learning rate.")
@click.option("--seed", type=int, default=None, help="Seed of every run (initialisation and patches).")
@click.option("--baseline", default=None, help="Row the others are paired against (default: the first RAT).")
@click.option("--figure-id", default=None, help="Test image of the figure grid (default: the first by id).")
@click.option("--resamples", type=click.IntRange(min=100), default=10_000, show_default=True,
              help="Bootstrap resamples of the confidence intervals.")
@click.option("--device", type=click.Choice(DEVICES), default=None, help="Where the models run.")
@progress_option
def table_cmd(recipe, models, out, masks, group, root, iters, batch_size, patch_size, lr, seed, baseline,
              figure_id, resamples, device, progress):
    """Train RAT and its baselines by one protocol and print the paper's table.

    Every row (a registered model, `rat-train models`) is trained with the same store, group, splits,
    patches, iterations, optimiser, schedule, loss and seed in OUT/runs/<row>; best.pt is chosen on val and
    the test split is scored once per model. Prints PSNR and SSIM (mean +- std), parameters, GFLOPs per
    256 x 256 patch, training ms per step and inference ms per image, and against RAT the paired difference
    with its 95 % bootstrap CI and Wilcoxon p (as `compare`). Writes table.csv, table.md and table.png (LQ,
    each model, HQ, zoomed crops). Complete runs are reused and incomplete ones resumed.
    """
    from rat.training.table import Recipe, load_recipe, make_table, recipe_from
    from rat.training.table_report import format_table, save_grid, write_table_csv, write_table_md

    with cli_errors():
        plan = load_recipe(recipe) if recipe else Recipe([])
        if models:
            plan.rows += recipe_from([m.strip() for m in models.split(",") if m.strip()]).rows
        if not plan.rows:
            fail("name the rows: --recipe FILE or --models NAME,...")
        given = {"masks": masks, "group": group, "root": str(root) if root else None, "iters": iters,
                 "batch_size": batch_size, "patch_size": patch_size, "lr": lr, "seed": seed, "device": device}
        common = {"progress": progress, **{k: v for k, v in given.items() if v is not None}}
        if not (common.get("masks") or plan.train.get("masks")):
            fail("--masks: the label store is required (or `masks` in the recipe's [train])")

        def say(text: str) -> None:
            click.echo(text, err=True)

        table = make_table(plan, common, out, baseline=baseline, resamples=resamples,
                           device=device or "auto", say=say)
        first = table.rows[0].restorer
        title = f"{first.dataset.name}/{first.group.name}"
        write_table_csv(table, out / "table.csv")
        write_table_md(table, out / "table.md", title)
        save_grid(table, out / "table.png", figure_id)
    click.echo(f"{title}, split test ({len(table.rows[0].split.entries)} images), paired against "
               f"{table.baseline}")
    click.echo(format_table(table))
    for note in table.notes:
        click.echo(f"note: {note}")
    click.echo(f"table: {out / 'table.md'}, {out / 'table.csv'}; figure: {out / 'table.png'}")
