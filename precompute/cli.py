"""`rat-precompute`: sample data, dataset index, label maps and their store."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rat")
def main() -> None:
    """Precompute region label maps for RAT training (runs SAM once per LQ image)."""


# ---------------------------------------------------------------------------------------------------
# data: sample-data, manifest


@main.command("sample-data")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=None,
              help="Seed of the crops, variants and noise (default 0); same seed, same bytes.")
def sample_data_cmd(out_dir, seed):
    """Write the small sample dataset (pathology + CT, from files shipped in installed packages)
    into DIR; index it with `rat-precompute manifest --dataset sample --root DIR`."""
    from rat.precompute.sample_data import make_sample_data

    try:
        files = make_sample_data(out_dir, **({} if seed is None else {"seed": seed}))
    except (ValueError, OSError) as err:  # ImageReadError is a ValueError
        _fail(str(err))
    click.echo(f"wrote {len(files)} files to {out_dir} (see {out_dir / 'README.txt'})")


@main.command("manifest")
@click.option("--dataset", required=True,
              help="Builtin dataset name (tma, aapm, pet, sample) or path to a definition .toml.")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Data root that the definition's file patterns are relative to.")
@click.option("--index", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Index CSV to write (default: <root>/.rat/<name>.csv); the problems go "
                   "beside it as <stem>.problems.csv.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def manifest_cmd(dataset, root, index, progress):
    """Find, pair, check and split the dataset's images under --root; write the per-image index.

    Derived LQ images (e.g. TMA's bicubic x4) are written once under <root>/.rat/derived/.
    Unpaired or unreadable files are printed and listed in the problems file, not indexed.
    """
    from rat.shared.manifest import (
        build_index,
        index_path,
        load_dataset,
        problems_path,
        summarize,
        write_index,
        write_problems,
    )

    try:
        ds = load_dataset(dataset)
        entries, problems = build_index(ds, root, progress=progress)
        out = index if index is not None else index_path(ds, root)
        write_index(entries, out)
        write_problems(problems, problems_path(out))
    except (ValueError, OSError) as err:
        _fail(str(err))
    click.echo(summarize(entries, problems))
    click.echo(f"index: {out}" + (f"  problems: {problems_path(out)}" if problems else ""))
    if not entries:
        _fail(f"no image pairs found under {root} for dataset {ds.name}")


# ---------------------------------------------------------------------------------------------------
# label maps: masks, info, verify, show


def _generator_options(func):
    """One CLI option per SAM generator parameter and per superpixel parameter, defaults from their code.

    Options default to None so that only what the user set is passed on; help shows the real default.
    """
    import inspect

    from rat.precompute.sam import generator_defaults
    from rat.precompute.superpixels import SuperpixelGenerator

    sp = {n: p.default for n, p in inspect.signature(SuperpixelGenerator.__init__).parameters.items()
          if n != "self"}
    specs = [(f"--{n.replace('_', '-')}", f"sam_{n}", d, f"SAM generator: {n} (SAM's default {d!r}).")
             for n, d in generator_defaults().items()]
    specs += [(f"--sp-{n.replace('_', '-')}", f"sp_{n}", d, f"superpixels: {n} (default {d!r}).")
              for n, d in sp.items()]
    for flag, dest, default, text in reversed(specs):
        kind = click.Choice(["slic", "felzenszwalb"]) if dest == "sp_method" else type(default)
        func = click.option(flag, dest, type=kind, default=None, help=text)(func)
    return func


def _picked(kwargs: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in kwargs.items()
            if k.startswith(prefix) and v is not None}


def _dataset_options(func):
    """--dataset, --root and --index: which images, found through the dataset's index."""
    func = click.option("--index", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="Per-image index file (default: the place `rat-precompute manifest` writes it)."
                        )(func)
    func = click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
                        help="Data root the dataset's paths are relative to.")(func)
    return click.option("--dataset", required=True,
                        help="Dataset name (tma, aapm, pet, sample) or path to a .toml.")(func)


def _selection_options(func):
    """--split, --limit and --shard: a subset of the index."""
    func = click.option("--shard", default=None,
                        help="i/n: this process takes every n-th image from the i-th.")(func)
    func = click.option("--limit", type=int, default=None,
                        help="At most N images (after --split and --shard).")(func)
    return click.option("--split", default=None, help="Only this split (train, test); default all.")(func)


def _fail(message: str) -> None:
    raise click.ClickException(message)


@main.command("masks")
@_dataset_options
@click.option("--out", required=True, help="Store to write: a directory (store.zarr) or fsspec URL.")
@_selection_options
@click.option("--generator", "generator_name", type=click.Choice(["sam", "superpixels"]),
              default="sam", show_default=True, help="Region source.")
@click.option("--checkpoint", envvar="RAT_SAM_CHECKPOINT", type=click.Path(path_type=Path),
              default=None, help="SAM checkpoint file (or set RAT_SAM_CHECKPOINT).")
@click.option("--model-type", type=click.Choice(["vit_b", "vit_l", "vit_h", "vit_tiny"]),
              default="vit_b", show_default=True,
              help="SAM model type matching the checkpoint (vit_tiny: test-only model).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True, help="Where SAM runs.")
@click.option("--chunk", type=int, default=None, help="Chunk edge of the label arrays (default 256).")
@click.option("--overwrite", is_flag=True,
              help="Recompute images already done (and replace a store's configuration).")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--scheduler", default=None,
              help="Run on an existing dask.distributed cluster: its scheduler address (tcp://HOST:PORT) "
                   "or scheduler file (dask scheduler --scheduler-file FILE).")
@click.option("--cluster", type=click.Choice(["local"]), default=None,
              help="Start a dask cluster for this run: `local` = worker processes on this machine, "
                   "one per GPU, each pinned to its GPU.")
@click.option("--workers", type=int, default=None,
              help="Workers of --cluster local (default: one per GPU; 1 without GPUs).")
@_generator_options
def masks_cmd(dataset, root, index, out, split, limit, shard, generator_name, checkpoint,
              model_type, device, chunk, overwrite, progress, scheduler, cluster, workers, **params):
    """Run SAM (or superpixels) once over every LQ image and store non-overlapping label maps.

    Resumable: a rerun skips images already complete for the same source and configuration.
    Exits non-zero if any image failed; the others are kept.
    """
    from rat.precompute.generators import build_generator
    from rat.precompute.runner import parse_shard, run_masks, select, summarize
    from rat.precompute.sam import SamError
    from rat.shared.manifest import load_dataset, load_index
    from rat.shared.store import DEFAULT_CHUNK, StoreError

    try:
        ds = load_dataset(dataset)
        entries = select(load_index(ds, root, index), split, parse_shard(shard), limit)
        if generator_name == "sam":
            gen_kwargs = {"checkpoint": checkpoint, "model_type": model_type, "device": device,
                          **_picked(params, "sam_")}
        else:
            gen_kwargs = _picked(params, "sp_")
        if scheduler or cluster or workers is not None:
            from rat.precompute.cluster import ClusterError, connect, generator_spec, run_masks_distributed

            spec = generator_spec(generator_name, **gen_kwargs)
            try:
                with connect(scheduler, cluster, workers) as client:
                    outcomes = run_masks_distributed(ds, entries, root, out, spec, client,
                                                     overwrite=overwrite, chunk=chunk or DEFAULT_CHUNK,
                                                     progress=progress)
            except ClusterError as err:
                _fail(str(err))
        else:
            gen = build_generator(generator_name, **gen_kwargs)
            outcomes = run_masks(ds, entries, root, out, gen, overwrite=overwrite,
                                 chunk=chunk or DEFAULT_CHUNK, progress=progress)
    except (SamError, StoreError, ValueError, OSError) as err:
        _fail(str(err))
    click.echo(summarize(outcomes))
    if any(o.status == "failed" for o in outcomes):
        sys.exit(1)


@main.command("export")
@click.argument("store")
@click.option("--zip", "zip_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Zip file to write (*.zip); rat-train, info, verify and show read it directly.")
@click.option("--overwrite", is_flag=True, help="Replace an existing zip file.")
def export_cmd(store, zip_file, overwrite):
    """Write STORE (directory or URL) into one zip file to hand over: complete label maps and image
    caches, bytes copied as stored."""
    from rat.precompute.share import export_zip
    from rat.shared.store import StoreError

    try:
        report = export_zip(store, zip_file, overwrite=overwrite)
    except (StoreError, ValueError, OSError) as err:
        _fail(str(err))
    click.echo(f"wrote {zip_file}: {report.summary()}")


@main.command("merge")
@click.argument("stores", nargs=-1, required=True)
@click.option("--out", required=True, help="Store to write (directory or URL); may exist with the same "
                                           "configuration, and then gains the others' label maps.")
def merge_cmd(stores, out):
    """Combine STORES made for parts of one dataset (by other people or nodes) into one store.

    Refuses stores made with another generator, parameters, checkpoint or windows, and images present in
    several stores with different content; nothing is written then.
    """
    from rat.precompute.share import merge_stores
    from rat.shared.store import StoreError

    try:
        report = merge_stores(stores, out)
    except (StoreError, ValueError, OSError) as err:
        _fail(str(err))
    click.echo(f"merged {len(stores)} stores into {out}: {report.summary()}")


@main.command("info")
@click.argument("store")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_cmd(store, as_json):
    """Provenance, image count, completeness and region-count statistics of a STORE."""
    import json

    from rat.shared.store import StoreError, open_store, summary

    try:
        s = summary(open_store(store))
    except StoreError as err:
        _fail(str(err))
    if as_json:
        click.echo(json.dumps(s, indent=2, default=str))
        return
    prov = s["provenance"]
    gen = prov["generator"]
    click.echo(f"store      {store}")
    click.echo(f"dataset    {prov['dataset']}  (schema {prov['schema']}, rat {prov['package_version']})")
    click.echo(f"generator  {gen['name']}" + (f"  model {gen['model_type']}  checkpoint sha256 "
                                             f"{gen['checkpoint_sha256']}" if "model_type" in gen else ""))
    click.echo("params     " + ", ".join(f"{k}={v}" for k, v in sorted(gen["params"].items())))
    click.echo("windows    " + "; ".join(f"{g}: {w['kind']} [{w['low']}, {w['high']}]"
                                         for g, w in prov["windows"].items()))
    click.echo(f"label maps {s['label_maps']} ({s['complete']} complete, "
               f"{len(s['incomplete'])} incomplete)")
    if s["regions"]:
        r = s["regions"]
        click.echo(f"regions    min {r['min']}  median {r['median']:g}  mean {r['mean']:.1f}  max {r['max']}")
    for i in s["incomplete"]:
        click.echo(f"  incomplete: {i}")


@main.command("verify")
@click.argument("store")
@click.option("--dataset", required=True, help="Dataset name or path to a .toml.")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Data root (LQ files are hashed against the store's records).")
@click.option("--index", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per-image index file (default: the documented place).")
@click.option("--split", default=None, help="Only this split; default all.")
def verify_cmd(store, dataset, root, index, split):
    """Check that every image of the index has a complete, intact label map made from its LQ file."""
    from rat.precompute.runner import select
    from rat.shared.manifest import load_dataset, load_index
    from rat.shared.store import StoreError, open_store, verify

    try:
        entries = select(load_index(load_dataset(dataset), root, index), split)
        problems = verify(open_store(store), entries, root)
    except (StoreError, ValueError, OSError) as err:
        _fail(str(err))
    if problems:
        for p in problems:
            click.echo(p)
        click.echo(f"{len(problems)} of {len(entries)} images have problems")
        sys.exit(1)
    click.echo(f"ok: {len(entries)} label maps complete and intact")


@main.command("show")
@click.argument("store")
@click.argument("image_id")
@click.option("--dataset", required=True, help="Dataset name or path to a .toml.")
@click.option("--root", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Data root holding the LQ image.")
@click.option("--index", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Per-image index file (default: the documented place).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write: the LQ image beside a coloured overlay of its regions.")
def show_cmd(store, image_id, dataset, root, index, out):
    """Write a picture of IMAGE_ID's regions."""
    from rat.precompute.overlay import save_side_by_side
    from rat.precompute.window import render_for_sam
    from rat.shared.io import ImageReadError
    from rat.shared.manifest import load_dataset, load_index, read_lq
    from rat.shared.store import StoreError, open_store, read_labels

    try:
        ds = load_dataset(dataset)
        entry = {e.id: e for e in load_index(ds, root, index)}.get(image_id)
        if entry is None:
            _fail(f"{image_id}: not in the index of {ds.name}")
        labels = read_labels(open_store(store), image_id)
        image, _ = read_lq(entry, root)
        save_side_by_side(render_for_sam(image, ds.groups[entry.group].sam_window), labels, out)
    except (StoreError, ImageReadError, ValueError, OSError) as err:
        _fail(str(err))
    click.echo(f"wrote {out}")


@main.command("cache")
@_dataset_options
@click.option("--out", required=True, help="Existing store (from `rat-precompute masks`) to add images to.")
@_selection_options
@click.option("--overwrite", is_flag=True, help="Rewrite images already cached.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def cache_cmd(dataset, root, index, out, split, limit, shard, overwrite, progress):
    """Add the LQ and HQ images to the store, chunked like the labels, for fast training patches.

    Values and dtype are kept exactly (never squeezed to 8 bit). Resumable: a rerun skips images cached from
    the same LQ and HQ files. Exits non-zero if any image failed; the others are kept.
    """
    from rat.precompute.cache import cache_images, summarize
    from rat.precompute.runner import parse_shard, select
    from rat.shared.manifest import load_dataset, load_index
    from rat.shared.store import StoreError

    try:
        entries = select(load_index(load_dataset(dataset), root, index), split, parse_shard(shard), limit)
        outcomes = cache_images(entries, root, out, overwrite=overwrite, progress=progress)
    except (StoreError, ValueError, OSError) as err:
        _fail(str(err))
    click.echo(summarize(outcomes))
    if any(o.status == "failed" for o in outcomes):
        sys.exit(1)
