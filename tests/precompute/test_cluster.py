"""`masks` on dask.distributed: equal bytes to a single process, a SIGKILLed worker, failures reported."""

import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import store_files

from rat.precompute import cluster as cl
from rat.precompute.cli import main
from rat.precompute.runner import run_masks
from rat.shared import store as st
from rat.shared.datasets import load_dataset
from rat.shared.index import Entry, index_path, load_index
from rat.shared.regions import build_generator

SAM_FAST = {"model_type": "test_tiny", "device": "cpu", "points_per_side": 4, "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


@pytest.fixture(scope="module")
def client():
    """Two worker processes pinned to (absent) GPUs 3 and 5: nothing here needs CUDA, the pinning shows."""
    from distributed import Client

    with cl.local_cluster(2, gpus=["3", "5"]) as cluster, Client(cluster) as c:
        c.wait_for_workers(2)
        yield c


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return result.exit_code, result.output


def test_worker_envs_pin_gpus_or_share_cores(monkeypatch):
    assert cl.worker_envs(3, ["3", "5"]) == [{"CUDA_VISIBLE_DEVICES": v} for v in ("3", "5", "3")]
    cpu = cl.worker_envs(2, [], cpus=8)
    assert all(e["OMP_NUM_THREADS"] == "4" and "CUDA_VISIBLE_DEVICES" not in e for e in cpu)
    assert cl.worker_envs(4, [], cpus=2)[0]["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 7")
    assert cl.visible_gpus() == ["2", "7"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert cl.visible_gpus() == []


def test_local_workers_are_pinned_to_their_gpu(client):
    seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    assert sorted(seen.values()) == ["3", "5"]


def test_agreed_provenance_refuses_disagreeing_workers():
    a = {"name": "sam", "params": {"points_per_side": 32}, "checkpoint_sha256": "ab"}
    b = {**a, "params": {"points_per_side": 16}}
    assert cl.agreed_provenance({"w1": (a, None), "w2": (a, None)}) == a
    with pytest.raises(cl.ClusterError, match=r"points_per_side: 32 -> 16.*same versions"):
        cl.agreed_provenance({"w1": (a, None), "w2": (b, None)})
    with pytest.raises(cl.ClusterError, match="cannot build the generator: worker w2: boom"):
        cl.agreed_provenance({"w1": (a, None), "w2": (None, "worker w2: boom")})
    with pytest.raises(cl.ClusterError, match="no workers"):
        cl.agreed_provenance({})


def test_cluster_run_equals_single_process_byte_for_byte(client, sample_root, tmp_path):
    ds = load_dataset("sample")
    entries = load_index(ds, sample_root)
    one, many = tmp_path / "one.zarr", tmp_path / "many.zarr"
    run_masks(ds, entries, sample_root, one, build_generator("superpixels"), progress=False)
    outcomes = cl.run_masks_distributed(ds, entries, sample_root, many, cl.generator_spec("superpixels"),
                                        client, progress=False)
    assert [o.status for o in outcomes] == ["done"] * len(entries)
    assert [o.image_id for o in outcomes] == [e.id for e in entries]
    # root record, array metadata with records, every compressed chunk (not the consolidated table of stamps)
    assert store_files(one) == store_files(many) and len(store_files(one)) > 3 * len(entries)
    again = cl.run_masks_distributed(ds, entries, sample_root, many, cl.generator_spec("superpixels"),
                                     client, progress=False)
    assert {o.status for o in again} == {"skipped"}
    plugins = client.run(lambda dask_worker: list(dask_worker.plugins))
    assert not [p for names in plugins.values() for p in names if p.startswith("rat-generator")]


def test_scheduler_option_reports_bad_images_and_goes_on(client, sample_copy, tmp_path):
    ds = load_dataset("sample")
    bad = load_index(ds, sample_copy)[3]
    (sample_copy / bad.lq).write_bytes((sample_copy / bad.lq).read_bytes()[:300])  # truncated after indexing
    out = tmp_path / "s.zarr"
    index = index_path(ds, sample_copy)  # named: used as it is (the default index would leave it out)
    code, text = run("masks", "--dataset", "sample", "--root", sample_copy, "--out", out, "--no-progress",
                     "--generator", "superpixels", "--scheduler", client.scheduler.address, "--index", index)
    assert code == 1, text
    assert "15 done, 0 skipped (already complete), 1 failed" in text
    assert f"FAILED {bad.id}: {bad.lq}: changed since the index was written" in text
    assert st.store_summary(st.open_store(out))["complete"] == 15
    code, text = run("masks", "--dataset", "sample", "--root", sample_copy, "--out", out,
                     "--generator", "superpixels", "--scheduler", client.scheduler.address, "--workers", "2")
    assert code != 0 and "--workers applies to --cluster local" in text
    code, text = run("masks", "--dataset", "sample", "--root", sample_copy, "--out", out,
                     "--generator", "superpixels", "--workers", "2")
    assert code != 0 and "add --cluster local" in text


def test_scheduler_file_connects(client, tmp_path):
    path = tmp_path / "scheduler.json"
    path.write_text(json.dumps({"type": "Scheduler", "address": client.scheduler.address}))  # as dask writes
    with cl.connect(str(path)) as other:
        assert other.scheduler.address == client.scheduler.address


def test_unreachable_scheduler_is_one_line():
    with pytest.raises(cl.ClusterError, match=r"tcp://127.0.0.1:9: cannot reach a dask scheduler"), \
            cl.connect("tcp://127.0.0.1:9", timeout="1s"):
        pass


def test_workers_that_cannot_load_the_checkpoint_stop_the_run_before_any_write(client, sample_root,
                                                                                tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    spec = cl.generator_spec("sam", checkpoint=bad, **SAM_FAST)
    assert spec.kwargs["checkpoint"] == str(bad.resolve()) and len(spec.expect["checkpoint_sha256"]) == 64
    ds = load_dataset("sample")
    with pytest.raises(cl.ClusterError, match=r"cannot build the generator: worker tcp://.*bad.pth: not a "
                                              r"loadable PyTorch state dict \(\w+\) \(and 1 more workers\)"):
        cl.run_masks_distributed(ds, load_index(ds, sample_root), sample_root, tmp_path / "s.zarr", spec,
                                 client, progress=False)
    assert not (tmp_path / "s.zarr").exists()


def test_images_whose_workers_keep_dying_are_reported():
    from distributed.scheduler import KilledWorker

    class Lost:
        status = "error"

        def exception(self):
            return KilledWorker("rat-masks-x", SimpleNamespace(address="tcp://127.0.0.1:1"), 3)

    entry = Entry("a/b", "ct", "train", "a.png", "b.png", None, "0" * 64, (4, 4))
    outcome = cl._lost(entry, Lost())
    assert outcome.status == "failed" and outcome.image_id == "a/b"
    assert outcome.reason == ("its worker died on each of 4 attempts, the last tcp://127.0.0.1:1 "
                              "(out of memory? see the worker logs)")


def _complete(url):
    try:
        return st.store_summary(st.open_store(url))["complete"]
    except (st.StoreError, KeyError, ValueError, OSError):
        return 0


@pytest.mark.slow
def test_sigkilled_worker_costs_only_its_images(client, sample_root, tiny_sam_checkpoint, tmp_path):
    ds = load_dataset("sample")
    entries = load_index(ds, sample_root)[::2]           # 4 CT + 4 pathology images
    out = tmp_path / "s.zarr"
    spec = cl.generator_spec("sam", checkpoint=tiny_sam_checkpoint, **SAM_FAST)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(outcomes=cl.run_masks_distributed(
        ds, entries, sample_root, out, spec, client, progress=False)))
    thread.start()
    deadline = time.time() + 240
    busy: dict = {}
    while time.time() < deadline and thread.is_alive():
        busy = {a: k for a, k in client.processing().items() if k}
        if _complete(out) >= 1 and busy:
            break
        time.sleep(0.05)
    assert busy, "no worker was busy: the run ended or never started"
    victim_addr = sorted(busy)[0]
    victim_pid = client.run(os.getpid, workers=[victim_addr])[victim_addr]
    done_at_kill = _complete(out)
    os.kill(victim_pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    assert 1 <= done_at_kill < len(entries), "the run finished before a worker could be killed"
    outcomes = result["outcomes"]
    assert len(outcomes) == len(entries)
    assert {o.status for o in outcomes} <= {"done", "skipped"}, [o.reason for o in outcomes]
    client.wait_for_workers(2, timeout=120)               # the nanny restarted the killed worker
    assert victim_pid not in client.run(os.getpid).values()
    group = st.open_store(out)
    assert st.verify(group, entries, sample_root) == []
    ref = tmp_path / "ref.zarr"
    gen = build_generator("sam", checkpoint=tiny_sam_checkpoint, **SAM_FAST)
    run_masks(ds, entries, sample_root, ref, gen, progress=False)
    ref_group = st.open_store(ref)
    same = {k: v for k, v in st.provenance(ref_group).items() if k != "records"}   # not the stamps' cache
    assert same == {k: v for k, v in st.provenance(group).items() if k != "records"}
    for e in entries:
        assert np.array_equal(st.read_labels(group, e.id), st.read_labels(ref_group, e.id)), e.id
        assert st.record(group, e.id) == st.record(ref_group, e.id)
