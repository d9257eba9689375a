"""Stores on object storage: a real S3-protocol server (moto) on loopback, written by `masks` (one process
and dask workers), read by info/verify/show/export/merge without being modified."""

import logging
import os
import subprocess

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import console_script, tiny_train_args

from rat.precompute.cli import main
from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.index import load_index

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")
pytest.importorskip("s3fs")

BUCKET = "rat-stores"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 (free port) with one bucket; endpoint and dummy credentials in env."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                     "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket=BUCKET)
        yield client
    server.stop()


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def objects(s3, prefix):
    """(key, ETag, LastModified) of every object under prefix: any write would change it."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted((o["Key"], o["ETag"], o["LastModified"]) for p in pages for o in p.get("Contents", []))


def masks(root, out, *extra):
    return run("masks", "--dataset", "sample", "--root", root, "--out", out, "--no-progress",
               "--generator", "superpixels", "--sp-n-segments", "16", *extra)


@pytest.fixture(scope="module")
def s3_store(s3, sample_root):
    url = f"s3://{BUCKET}/team/sample.zarr"
    code, text = masks(sample_root, url)
    assert code == 0 and "16 done" in text, text
    return url


def test_masks_writes_to_s3_and_readers_leave_it_untouched(s3, s3_store, sample_root, tmp_path):
    keys = objects(s3, "team/sample.zarr/")
    assert "team/sample.zarr/zarr.json" in [k for k, _, _ in keys] and len(keys) > 16
    code, text = run("info", s3_store)
    assert code == 0 and "16 complete" in text
    code, text = run("verify", s3_store, "--dataset", "sample", "--root", sample_root)
    assert code == 0 and "ok: 16 label maps" in text
    code, text = run("show", s3_store, "ct_01", "--dataset", "sample", "--root", sample_root,
                     "--out", tmp_path / "ov.png")
    assert code == 0 and (tmp_path / "ov.png").stat().st_size > 1000
    local = tmp_path / "local.zarr"
    assert masks(sample_root, local)[0] == 0
    remote, here = st.open_store(s3_store), st.open_store(local)
    def same(prov):  # the consolidated records' pointer names stamps of this store's own objects
        return {k: v for k, v in prov.items() if k != "records"}

    assert same(st.provenance(remote)) == same(st.provenance(here))
    for e in load_index(load_dataset("sample"), sample_root):
        assert np.array_equal(st.read_labels(remote, e.id), st.read_labels(here, e.id))
    with pytest.raises(ValueError, match="read-only"):
        remote["labels"].create_array("x", shape=(2, 2), dtype="uint8")
    code, text = masks(sample_root, s3_store)                      # resumable on S3 too
    assert code == 0 and "0 done, 16 skipped" in text
    assert objects(s3, "team/sample.zarr/") == keys                # nothing was rewritten


def test_export_and_merge_with_s3(s3, s3_store, sample_root, tmp_path):
    before = objects(s3, "team/sample.zarr/")
    z = tmp_path / "sample.zip"
    code, text = run("export", s3_store, "--zip", z)
    assert code == 0 and "16 label maps" in text, text
    assert run("verify", z, "--dataset", "sample", "--root", sample_root)[0] == 0
    parts = [f"s3://{BUCKET}/nodes/{i}.zarr" for i in range(2)]
    for i, url in enumerate(parts):
        assert masks(sample_root, url, "--shard", f"{i}/2")[0] == 0
    merged = f"s3://{BUCKET}/team/merged.zarr"
    code, text = run("merge", *parts, "--out", merged)
    assert code == 0 and "16 label maps" in text, text
    code, text = run("verify", merged, "--dataset", "sample", "--root", sample_root)
    assert code == 0 and "ok: 16 label maps" in text
    strip = [(k.split("/", 2)[2], e) for k, e, _ in objects(s3, "team/merged.zarr/")]
    assert strip == [(k.split("/", 2)[2], e) for k, e, _ in before]   # same bytes as the one-process store
    assert objects(s3, "team/sample.zarr/") == before


@pytest.mark.slow
def test_dask_workers_write_to_s3(s3, s3_store, sample_root):
    url = f"s3://{BUCKET}/cluster/sample.zarr"
    code, text = masks(sample_root, url, "--cluster", "local", "--workers", "2")
    assert code == 0 and "16 done" in text, text
    a, b = st.open_store(url), st.open_store(s3_store)
    for e in load_index(load_dataset("sample"), sample_root):
        assert np.array_equal(st.read_labels(a, e.id), st.read_labels(b, e.id))
        assert st.record(a, e.id) == st.record(b, e.id)


def test_endpoint_from_fsspec_config_env(s3, s3_store):
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    env["FSSPEC_S3_ENDPOINT_URL"] = os.environ["AWS_ENDPOINT_URL"]
    done = subprocess.run([console_script("rat-precompute"), "info", s3_store], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "16 complete" in done.stdout


@pytest.mark.usefixtures("one_thread")
def test_training_reads_the_store_from_s3(s3, s3_store, sample_root, tmp_path):
    from rat.training.cli import main as train_main

    before = objects(s3, "team/sample.zarr/")
    result = CliRunner().invoke(train_main, [str(a) for a in (
        "--masks", s3_store, "--dataset", "sample", "--root", sample_root, "--group", "ct",
        "--out", tmp_path / "run", *tiny_train_args(iters=3, workers=2))])
    assert result.exit_code == 0, result.output
    assert "done: 3 steps" in result.output
    assert (tmp_path / "run" / "last.pt").is_file()
    assert objects(s3, "team/sample.zarr/") == before



def test_starting_to_train_costs_at_most_one_request_per_image(s3, s3_store, sample_root, monkeypatch):
    """Everything before the first step (definition, index, records, label checks) on S3, counted at the
    client: once the label bytes were checked, a start reads the consolidated records and one listing, and
    no object of any single image: a constant number of requests, however many images."""
    import s3fs

    from rat.training.config import TrainConfig
    from rat.training.trainer import load_data

    cfg = TrainConfig(masks=s3_store, root=str(sample_root), group="ct")
    first = load_data(cfg)                                          # label bytes checked (and remembered)
    calls = []
    real = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls.append((method, kwargs.get("Key") or kwargs.get("Prefix") or ""))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    data = load_data(cfg)
    assert len(data.train) + len(data.val) == len(first.train) + len(first.val) == 6
    ids = {e.id for e in data.train + data.val}
    per_image = [c for c in calls if any(f"/labels/{i}/" in c[1] for i in ids)]
    assert calls and per_image == [], per_image
    assert len(calls) <= 20 and not [m for m, _ in calls if m.startswith(("put", "delete"))], calls
