"""`rat-precompute`: sample data, dataset index, label maps and their store.

Every command imports what it needs when it runs (torch, segment_anything, zarr, dask): `--help` is instant.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import click

from rat.shared.cli import (
    CONTEXT,
    LazyHelp,
    cli_errors,
    dataset_options,
    exit_status,
    fail,
    masks_option,
    progress_option,
    selection_options,
)
from rat.shared.regions import GENERATOR_NAMES, SAM_MODEL_TYPES, SUPERPIXEL_METHODS
from rat.shared.regions.sam_params import generator_defaults

#: Library parameter names whose flag is spelled otherwise.
FLAGS = {"n_workers": "--workers", "name": "--generator", "url": "--masks", "out": "--masks"}


@click.group(context_settings=CONTEXT)
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

    with cli_errors():
        files = make_sample_data(out_dir, **({} if seed is None else {"seed": seed}))
    click.echo(f"wrote {len(files)} files to {out_dir} (see {out_dir / 'README.txt'})")


@main.command("manifest")
@dataset_options()
@progress_option
def manifest_cmd(dataset, root, index, progress):
    """Find, pair, check and split the dataset's images under --root; write the per-image index.

    Derived LQ images (e.g. TMA's bicubic x4) are written once under <root>/.rat/derived/.
    Unpaired or unreadable files are printed and listed in the problems file (<index stem>.problems.csv
    beside the index), not indexed.
    """
    from rat.shared.datasets import load_dataset
    from rat.shared.index import index_path, problems_path, summarize, write_index, write_problems
    from rat.shared.manifest import build_index

    with cli_errors():
        ds = load_dataset(dataset)
        entries, problems = build_index(ds, root, progress=progress)
        out = index if index is not None else index_path(ds, root)
        write_index(entries, out)
        write_problems(problems, problems_path(out))
    click.echo(summarize(entries, problems))
    click.echo(f"index: {out}" + (f"  problems: {problems_path(out)}" if problems else ""))
    if not entries:
        fail(f"no image pairs found under {root} for dataset {ds.name}")


def _selected(dataset, root, index, split=None, limit=None, shard=None):
    """(definition, entries of the index selected by split, shard and limit)."""
    from rat.shared.datasets import load_dataset
    from rat.shared.index import load_index, parse_shard, select

    ds = load_dataset(dataset)
    return ds, select(load_index(ds, root, index), split, parse_shard(shard), limit)


# ---------------------------------------------------------------------------------------------------
# label maps: masks, cache


def _generator_options(func):
    """One option per SAM generator parameter and per superpixel parameter, defaults from their code.

    Options default to None so that only what the user set is passed on; help shows the real default.
    """
    from rat.shared.regions.superpixels import SuperpixelGenerator

    sp = {n: p.default for n, p in inspect.signature(SuperpixelGenerator.__init__).parameters.items()
          if n != "self"}
    specs = [(f"--{n.replace('_', '-')}", f"sam_{n}", d, f"SAM generator: {n} (SAM's default {d!r}).")
             for n, d in generator_defaults().items()]
    specs += [(f"--sp-{n.replace('_', '-')}", f"sp_{n}", d, f"superpixels: {n} (default {d!r}).")
              for n, d in sp.items()]
    for name, dest, default, text in reversed(specs):
        kind = click.Choice(SUPERPIXEL_METHODS) if dest == "sp_method" else type(default)
        func = click.option(name, dest, type=kind, default=None, help=text)(func)
    return func


def _picked(kwargs: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): v for k, v in kwargs.items()
            if k.startswith(prefix) and v is not None}


def _chunk_help() -> str:
    from rat.shared.store import DEFAULT_CHUNK

    return f"Chunk edge of the label arrays (default {DEFAULT_CHUNK}, the training patch)."


def _cluster_help() -> str:
    from rat.precompute.cluster import CLUSTERS

    return (f"Start a dask cluster for this run ({', '.join(CLUSTERS)}): `local` = worker processes on "
            "this machine, one per GPU, each pinned to its GPU.")


@main.command("masks")
@dataset_options()
@masks_option("--out", help="Store to write: a directory (store.zarr) or fsspec URL (--out: older spelling).")
@selection_options()
@click.option("--generator", "generator_name", type=click.Choice(GENERATOR_NAMES), default="sam",
              show_default=True, help="Region source.")
@click.option("--checkpoint", envvar="RAT_SAM_CHECKPOINT", type=click.Path(path_type=Path),
              default=None, help="SAM checkpoint file (or set RAT_SAM_CHECKPOINT).")
@click.option("--model-type", type=click.Choice(SAM_MODEL_TYPES), default="vit_b", show_default=True,
              help="SAM model type matching the checkpoint (vit_tiny: test-only model).")
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True, help="Where SAM runs.")
@click.option("--chunk", type=click.IntRange(min=1), default=None, cls=LazyHelp, help=_chunk_help)
@click.option("--overwrite", is_flag=True,
              help="Recompute images already done (and replace a store's configuration).")
@progress_option
@click.option("--scheduler", default=None,
              help="Run on an existing dask.distributed cluster: its scheduler address (tcp://HOST:PORT) "
                   "or scheduler file (dask scheduler --scheduler-file FILE).")
@click.option("--cluster", default=None, cls=LazyHelp, help=_cluster_help)
@click.option("--workers", type=int, default=None,
              help="Workers of --cluster local (default: one per GPU; 1 without GPUs).")
@_generator_options
def masks_cmd(dataset, root, index, masks, split, limit, shard, generator_name, checkpoint,
              model_type, device, chunk, overwrite, progress, scheduler, cluster, workers, **params):
    """Run SAM (or superpixels) once over every LQ image and store non-overlapping label maps.

    Resumable: a rerun skips images already complete for the same source and configuration.
    Exits non-zero if any image failed; the others are kept.
    """
    from rat.shared.batch import failed, summarize

    if workers is not None and scheduler:
        fail("--workers applies to --cluster local; an existing cluster has its own workers")
    if workers is not None and not cluster:
        fail("--workers applies to --cluster local; add --cluster local")
    if generator_name == "sam":
        gen_kwargs = {"checkpoint": checkpoint, "model_type": model_type, "device": device,
                      **_picked(params, "sam_")}
    else:
        gen_kwargs = _picked(params, "sp_")
    store_kwargs = {"overwrite": overwrite, "progress": progress, **({"chunk": chunk} if chunk else {})}
    with cli_errors(FLAGS):
        ds, entries = _selected(dataset, root, index, split, limit, shard)
        if scheduler or cluster:
            from rat.precompute.cluster import connect, generator_spec, run_masks_distributed

            spec = generator_spec(generator_name, **gen_kwargs)
            with connect(scheduler, cluster, workers) as client:
                outcomes = run_masks_distributed(ds, entries, root, masks, spec, client, **store_kwargs)
        else:
            from rat.precompute.runner import run_masks
            from rat.shared.regions import build_generator

            gen = build_generator(generator_name, **gen_kwargs)
            outcomes = run_masks(ds, entries, root, masks, gen, **store_kwargs)
    click.echo(summarize(outcomes))
    exit_status(failed(outcomes))


@main.command("cache")
@dataset_options()
@masks_option("--out", help="Existing store (from `rat-precompute masks`) to add images to (--out: older "
                            "spelling).")
@selection_options()
@click.option("--overwrite", is_flag=True, help="Rewrite images already cached.")
@progress_option
def cache_cmd(dataset, root, index, masks, split, limit, shard, overwrite, progress):
    """Add the LQ and HQ images to the store, chunked like the labels, for fast training patches.

    Values and dtype are kept exactly (never squeezed to 8 bit). Resumable: a rerun skips images cached from
    the same LQ and HQ files. Exits non-zero if any image failed; the others are kept.
    """
    from rat.shared.batch import failed, summarize
    from rat.shared.cache import cache_images

    with cli_errors(FLAGS):
        _, entries = _selected(dataset, root, index, split, limit, shard)
        outcomes = cache_images(entries, root, masks, overwrite=overwrite, progress=progress)
    click.echo(summarize(outcomes, done="cached", skipped="skipped (already cached)"))
    exit_status(failed(outcomes))


# ---------------------------------------------------------------------------------------------------
# sharing: export, merge


def _store_argument(func):
    """The store as a positional STORE or as --masks STORE (the name rat-train uses)."""
    func = masks_option(required=False, help="The label store (instead of the STORE argument).")(func)
    return click.argument("store", required=False)(func)


def _the_store(store: str | None, masks: str | None) -> str:
    if bool(store) == bool(masks):
        fail("name the store once: as the STORE argument or as --masks STORE")
    return store or masks


@main.command("export")
@_store_argument
@click.option("--zip", "zip_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Zip file to write (*.zip); rat-train, info, verify and show read it directly.")
@click.option("--overwrite", is_flag=True, help="Replace an existing zip file.")
def export_cmd(store, masks, zip_file, overwrite):
    """Write STORE (directory or URL) into one zip file to hand over: complete label maps and image
    caches, bytes copied as stored."""
    from rat.precompute.share import export_zip

    with cli_errors(FLAGS):
        report = export_zip(_the_store(store, masks), zip_file, overwrite=overwrite)
    click.echo(f"wrote {zip_file}: {report.summarize()}")


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

    with cli_errors(FLAGS):
        report = merge_stores(stores, out)
    click.echo(f"merged {len(stores)} stores into {out}: {report.summarize()}")


# ---------------------------------------------------------------------------------------------------
# looking at a store: info, verify, show


@main.command("info")
@_store_argument
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_cmd(store, masks, as_json):
    """Provenance, image count, completeness and region-count statistics of a STORE."""
    import json

    from rat.shared.store import open_store, summarize

    store = _the_store(store, masks)
    with cli_errors(FLAGS):
        s = summarize(open_store(store))
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
@_store_argument
@dataset_options()
@click.option("--split", type=click.Choice(["train", "test", "all"]), default=None,
              help="Only this split (default all).")
def verify_cmd(store, masks, dataset, root, index, split):
    """Check that every image of the index has a complete, intact label map made from its LQ file
    (LQ files under --root are hashed against the store's records)."""
    from rat.shared.store import open_store, verify

    with cli_errors(FLAGS):
        _, entries = _selected(dataset, root, index, split)
        problems = verify(open_store(_the_store(store, masks)), entries, root)
    for p in problems:
        click.echo(p)
    if problems:
        click.echo(f"{len(problems)} of {len(entries)} images have problems")
        exit_status(True)
    click.echo(f"ok: {len(entries)} label maps complete and intact")


@main.command("show")
@click.argument("args", nargs=-1, required=True, metavar="[STORE] IMAGE_ID")
@masks_option(required=False, help="The label store (instead of the STORE argument).")
@dataset_options()
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="PNG to write: the LQ image beside a coloured overlay of its regions.")
def show_cmd(args, masks, dataset, root, index, out):
    """Write a picture of IMAGE_ID's regions."""
    from rat.precompute.overlay import save_side_by_side
    from rat.shared.index import read_lq
    from rat.shared.regions.window import render_for_sam
    from rat.shared.store import open_store, read_labels

    if len(args) > 2:
        fail("expected [STORE] IMAGE_ID")
    store, image_id = (None, args[0]) if len(args) == 1 else args
    with cli_errors(FLAGS):
        ds, entries = _selected(dataset, root, index)
        entry = {e.id: e for e in entries}.get(image_id)
        if entry is None:
            fail(f"{image_id}: not in the index of {ds.name}")
        labels = read_labels(open_store(_the_store(store, masks)), image_id)
        image, _ = read_lq(entry, root)
        save_side_by_side(render_for_sam(image, ds.groups[entry.group].sam_window), labels, out)
    click.echo(f"wrote {out}")
