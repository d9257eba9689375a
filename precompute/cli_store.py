"""`rat-precompute` commands that look at, share and upgrade label stores: export, merge, info, verify, show,
upgrade (registered on the group in :mod:`rat.precompute.cli`), and the helpers both modules use."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rat.shared.cli import (
    cli_errors,
    dataset_options,
    exit_status,
    fail,
    masks_option,
    progress_option,
)
from rat.shared.datasets.splits import SPLITS

#: Library parameter names whose flag is spelled otherwise.
FLAGS = {"n_workers": "--workers", "name": "--generator", "url": "--masks"}


def selected_images(dataset, root, index, split=None, limit=None, shard=None, url=None, progress=False):
    """(definition, selected entries, data root): from the store's own dataset and index when it carries
    them and no other dataset is named, else from the dataset's index under the root (built or refreshed)."""
    from rat.shared.index import select_entries
    from rat.shared.store import dataset_for, open_store

    store = open_store(url) if url is not None else None
    ds, entries, root = dataset_for(store, dataset, root, index, progress=progress)
    return ds, select_entries(entries, split, shard=shard, limit=limit), root


# ---------------------------------------------------------------------------------------------------
# sharing: export, merge


def _store_argument(func):
    """The store as a positional STORE or as --masks STORE (the name rat-train uses)."""
    func = masks_option(required=False, help="The label store (instead of the STORE argument).")(func)
    return click.argument("url", metavar="[STORE]", required=False)(func)


def _location(url: str | None, masks: str | None) -> str:
    if bool(url) == bool(masks):
        fail("name the store once: as the STORE argument or as --masks STORE")
    return url or masks


@click.command("export")
@_store_argument
@click.option("--zip", "zip_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Zip file to write (*.zip); rat-train, info, verify and show read it directly.")
@click.option("--nifti", "nifti_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the label maps as NIfTI in their scans' geometry (ITK-SNAP, Slicer): one "
                   "label volume per DICOM series and per volume, one file per other image.")
@click.option("--per-slice", is_flag=True,
              help="--nifti: one file per DICOM slice (a one-slice volume at its place) instead of one "
                   "volume per series.")
@click.option("--overwrite", is_flag=True, help="Replace an existing zip file.")
@click.option("--with-images", is_flag=True,
              help="Also copy the image caches a schema-1 store holds (default: label maps and dataset).")
@dataset_options(required=False, root_required=False)
@click.option("--split", type=click.Choice([*SPLITS, "all"]), default=None,
              help="--nifti: only this split (default all).")
@progress_option
def export_cmd(url, masks, zip_file, nifti_dir, per_slice, overwrite, with_images, dataset, root, index,
               split, progress):
    """Hand STORE over as one zip file (complete label maps, the dataset's definition and index, bytes
    copied as stored), and/or write its label maps as NIfTI files with the geometry of their source
    images, for ITK-SNAP and 3D Slicer (--nifti; needs the source images under the data root).

    --nifti writes one label volume per DICOM series (<series folder>_regions.nii.gz, slices without a label
    map at 0 and listed) and per volume, and one file per other image. A series with several orientations,
    gantry tilt, a gap or uneven spacing is refused with one line; --per-slice writes its slices one by one.
    """
    from rat.shared.jobs import failed, notes, summarize

    if zip_file is None and nifti_dir is None:
        fail("name what to write: --zip FILE and/or --nifti DIR")
    url = _location(url, masks)
    outcomes = []
    with cli_errors(FLAGS):
        if zip_file is not None:
            from rat.precompute.share import export_zip

            report = export_zip(url, zip_file, overwrite=overwrite, with_images=with_images)
            click.echo(f"wrote {zip_file}: {report.summarize()}")
        if nifti_dir is not None:
            from rat.precompute.nifti_export import export_nifti
            from rat.shared.store import open_store

            _, entries, root = selected_images(dataset, root, index, split, url=url)
            outcomes = export_nifti(open_store(url), entries, root, nifti_dir, progress=progress,
                                    per_slice=per_slice)
            click.echo(f"NIfTI into {nifti_dir}: " + summarize(outcomes, done="written", skipped="skipped"))
            for line in notes(outcomes):
                click.echo(line)
    exit_status(failed(outcomes))


@click.command("merge")
@click.argument("urls", metavar="STORES...", nargs=-1, required=True)
@click.option("--out", required=True, help="Store to write (directory or URL); may exist with the same "
                                           "configuration, and then gains the others' label maps.")
@click.option("--with-images", is_flag=True,
              help="Also copy the image caches schema-1 stores hold (default: label maps and dataset only).")
def merge_cmd(urls, out, with_images):
    """Combine STORES made for parts of one dataset (by other people or nodes) into one store.

    Refuses stores made with another generator, parameters, checkpoint or windows, and images present in
    several stores with different content; nothing is written then.
    """
    from rat.precompute.share import merge_stores

    with cli_errors(FLAGS):
        report = merge_stores(urls, out, with_images=with_images)
    click.echo(f"merged {len(urls)} stores into {out}: {report.summarize()}")


# ---------------------------------------------------------------------------------------------------
# looking at a store: info, verify, show


@click.command("info")
@_store_argument
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info_cmd(url, masks, as_json):
    """Provenance, dataset, image count, completeness and region-count statistics of a STORE."""
    from rat.shared.store import open_store, store_summary
    from rat.shared.store.legacy import upgrade_hint

    url = _location(url, masks)
    with cli_errors(FLAGS):
        s = store_summary(open_store(url))
    if as_json:
        click.echo(json.dumps(s, indent=2, default=str))
        return
    prov = s["provenance"]
    gen = prov["generator"]
    click.echo(f"store      {url}")
    click.echo(f"dataset    {prov['dataset']}  (schema {prov['schema']}, rat {prov['package_version']})")
    if prov.get("index"):
        click.echo(f"index      {prov['index']['entries']} images; made from root {prov.get('root')}")
    package = f"  ({gen['package']} {gen.get('version')})" if "package" in gen else ""
    model = (f"  model {gen['model_type']}  checkpoint sha256 {gen['checkpoint_sha256']}"
             if "model_type" in gen else "")
    click.echo(f"generator  {gen['name']}{package}{model}")
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
    if prov["schema"] == 1:
        click.echo(f"note: {upgrade_hint(url)}")


@click.command("verify")
@_store_argument
@dataset_options(required=False, root_required=False)
@click.option("--split", type=click.Choice([*SPLITS, "all"]), default=None,
              help="Only this split (default all).")
@progress_option
def verify_cmd(url, masks, dataset, root, index, split, progress):
    """Check that every image of the index has a complete, intact label map made from its LQ file
    (LQ files under the data root are hashed against the store's records). A store that carries its
    dataset needs no --dataset; the root is resolved as for `masks`."""
    from rat.shared.store import open_store, verify

    url = _location(url, masks)
    with cli_errors(FLAGS):
        _, entries, root = selected_images(dataset, root, index, split, url=url, progress=progress)
        problems = verify(open_store(url), entries, root, progress=progress)
    for p in problems:
        click.echo(p)
    if problems:
        click.echo(f"{len(problems)} of {len(entries)} images have problems")
        exit_status(True)
    click.echo(f"ok: {len(entries)} label maps complete and intact")


@click.command("show")
@click.argument("args", nargs=-1, required=True, metavar="[STORE] IMAGE_ID")
@masks_option(required=False, help="The label store (instead of the STORE argument).")
@dataset_options(required=False, root_required=False)
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
    url, image_id = (None, args[0]) if len(args) == 1 else args
    url = _location(url, masks)
    with cli_errors(FLAGS):
        ds, entries, root = selected_images(dataset, root, index, url=url)
        entry = {e.id: e for e in entries}.get(image_id)
        if entry is None:
            fail(f"{image_id}: not in the index of {ds.name}")
        labels = read_labels(open_store(url), image_id)
        image, _ = read_lq(entry, root)
        save_side_by_side(render_for_sam(image, ds.groups[entry.group].sam_window), labels, out)
    click.echo(f"wrote {out}")


@click.command("upgrade")
@_store_argument
@dataset_options(root_required=False)
@progress_option
def upgrade_cmd(url, masks, dataset, root, index, progress):
    """Upgrade a schema-1 STORE in place to schema 2: it then carries the dataset's definition, index and
    root, and its label maps become OME-Zarr label images. Label maps are kept (their bytes are checked
    first); run it while nothing else uses the store. A schema-2 store gets its dataset record refreshed."""
    from rat.precompute.upgrade import upgrade_store

    url = _location(url, masks)
    with cli_errors(FLAGS):
        ds, entries, root = selected_images(dataset, root, index, progress=progress)
        report = upgrade_store(url, ds, entries, root, progress=progress)
    click.echo(report)
