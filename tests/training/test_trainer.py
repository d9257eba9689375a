"""rat-train: store check, exact resume, checkpoints (weights_only, bare state dicts), DDP, logs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import TINY_RUN, tiny_train_args

from rat.precompute.runner import run_masks
from rat.shared.datasets import load_dataset
from rat.shared.index import index_path, load_index, write_index
from rat.shared.index.build import build_index
from rat.shared.io import read_image, write_image
from rat.shared.regions import build_generator
from rat.shared.store import StoreError
from rat.shared.store.schema import image_key
from rat.training import trainer
from rat.training.checkpoint import load_checkpoint, model_from_checkpoint
from rat.training.cli import main
from rat.training.config import TrainError
from rat.training.distributed import Runtime
from rat.training.model.network import build_model
from rat.training.model_folder import export_model
from rat.training.run import Run
from rat.training.trainer import lr_at, train

TINY = TINY_RUN

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def store(sample_store) -> Path:
    return sample_store


def cfg(store, root, out, **kw) -> dict:
    """The settings of a tiny run, as the command line passes them on."""
    return {**TINY, "masks": str(store), "root": str(root), "out": str(out), **kw}


def train_losses(out: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


def test_lr_is_torch_cosine_annealing():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 50, eta_min=1e-6)
    for step in range(50):
        assert lr_at(step, 2e-4, 1e-6, 50) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()
    assert lr_at(50, 2e-4, 1e-6, 50) == 1e-6 and lr_at(10**6, 2e-4, 1e-6, 50) == 1e-6


def test_resume_equals_uninterrupted(store, sample_root, tmp_path):
    straight = train(cfg(store, sample_root, tmp_path / "a", iters=6))
    first = train(cfg(store, sample_root, tmp_path / "b", iters=6, stop_at=3))
    assert first["step"] == 3
    ck = load_checkpoint(tmp_path / "b" / "last.pt")  # weights_only=True inside
    assert ck["step"] == 3 and ck["samples"] == 6 and ck["config"]["iters"] == 6
    assert ck["provenance"]["dataset"] == "sample" and set(ck["rng"]) == {"torch", "cuda", "numpy", "python"}
    with pytest.raises(TrainError, match="already holds a run"):
        train(cfg(store, sample_root, tmp_path / "b", iters=6))
    resumed = train(cfg(store, sample_root, tmp_path / "b", resume=True, iters=6))
    assert resumed["step"] == 6
    a, b = train_losses(tmp_path / "a"), train_losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4, 5, 6]  # the resumed run rewrote nothing twice
    for step in (4, 5, 6):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7)
    assert len({round(a[s], 7) for s in a}) > 1  # losses really change from step to step
    for (name, pa), pb in zip(straight["model"].state_dict().items(), resumed["model"].state_dict().values(),
                              strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-6, atol=1e-7, msg=name)


def test_store_from_other_pixels_is_refused(store, sample_copy, tmp_path):
    ds = load_dataset("sample")
    lq = sample_copy / "ct" / "lq" / "ct_03.dcm"
    pixels, _ = read_image(lq)
    write_image(lq, pixels + 50, like=lq)  # same file, other pixels: a new index sees another SHA-256
    entries, _ = build_index(ds, sample_copy, progress=False)
    write_index(entries, index_path(ds, sample_copy))
    local = str(index_path(ds, sample_copy))
    with pytest.raises(StoreError, match="ct_03: label map made from other LQ bytes"):  # with that index
        train(cfg(store, sample_copy, tmp_path / "x", iters=1, index=local))
    with pytest.raises(StoreError, match=r"ct_03: LQ file .*ct_03.dcm differs from the one the store"):
        train(cfg(store, sample_copy, tmp_path / "x", iters=1))  # with the store's own index
    assert not (tmp_path / "x" / "last.pt").exists()


def test_missing_label_maps_are_listed_through_the_cli(sample_root, tmp_path):
    ds = load_dataset("sample")
    index = load_index(ds, sample_root)
    partial = [e for e in index if e.id not in ("ct_00", "ct_05")]
    run_masks(ds, partial, sample_root, tmp_path / "p.zarr", build_generator("superpixels"), progress=False,
              index=index)
    result = CliRunner().invoke(main, ["--masks", str(tmp_path / "p.zarr"), "--dataset", "sample", "--root",
                                       str(sample_root), "--group", "ct", "--out", str(tmp_path / "run"),
                                       "--model", "rat-small", "--no-progress"])
    assert result.exit_code == 1
    assert "ct_00: missing or incomplete label map" in result.output
    assert "ct_05: missing or incomplete label map" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(main, ["--masks", str(tmp_path / "p.zarr"), "--dataset", "sample", "--root",
                                       str(sample_root), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "pass --group" in result.output


def test_bare_state_dicts_load_for_eval_and_fine_tuning(store, sample_root, tmp_path):
    torch.manual_seed(1)
    authors = build_model("rat-small", 1, width=8)
    bare = tmp_path / "model_best.pth"
    torch.save(authors.state_dict(), bare)  # what the public code saves
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"params": {f"module.{k}": v for k, v in authors.state_dict().items()}}, wrapped)
    for path in (bare, wrapped):
        ck = load_checkpoint(path)
        assert ck["bare"]
        model = model_from_checkpoint(ck, name="rat-small")
        for k, v in authors.state_dict().items():
            assert torch.equal(model.state_dict()[k], v)
    with pytest.raises(TrainError, match="weights do not fit"):
        model_from_checkpoint(load_checkpoint(bare), name="rat")
    # fine-tuning: --init loads the weights; with lr 0 they stay as they were
    out = train(cfg(store, sample_root, tmp_path / "ft", iters=1, init=str(bare), lr=0.0, min_lr=0.0))
    for k, v in authors.state_dict().items():
        assert torch.equal(out["model"].state_dict()[k], v), k
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(bare), "--model", "rat-small", "--masks",
                                       str(store), "--dataset", "sample", "--root", str(sample_root),
                                       "--group", "ct", "--no-progress", "--csv", str(tmp_path / "e.csv")])
    assert result.exit_code == 0, result.output
    assert "LQ input" in result.output and (tmp_path / "e.csv").is_file()
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(bare), "--model", "rat-small", "--masks",
                                       str(store), "--dataset", "sample", "--root", str(sample_root),
                                       "--group", "pathology"])
    assert result.exit_code == 1 and "1 channel(s)" in result.output




def test_cli_trains_with_csv_metrics_curves_and_best(store, sample_root, tmp_path):
    out = tmp_path / "run"
    args = ["--masks", store, "--dataset", "sample", "--root", sample_root, "--group", "pathology", "--out",
            out, *tiny_train_args(iters=4, eval_every=2, log_every=2, metrics_format="csv", loss="l1")]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "done: 4 steps" in result.output
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,kind,loss,lr")
    kinds = [r.split(",")[:2] for r in rows[1:]]
    assert kinds == [["2", "train"], ["2", "val"], ["4", "train"], ["4", "val"]]
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    best = load_checkpoint(out / "best.pt")
    assert best["config"]["loss"] == "l1" and best["model_args"]["img_channel"] == 3
    assert math.isfinite(best["selection"]["value"]) and best["val"]["images"] == 1
    assert json.loads((out / "config.json").read_text())["metrics_format"] == "csv"


def test_ddp_two_processes_keep_identical_parameters(store, sample_root, tmp_path):
    """torchrun, 2 CPU processes (gloo): ranks end equal, and equal to one process with twice the batch."""
    script = tmp_path / "run_ddp.py"
    script.write_text(
        "import json, os, sys, torch\n"
        "from rat.training.trainer import train\n"
        "summary = train(json.loads(sys.argv[1]))\n"
        "rank = os.environ['RANK']\n"
        "torch.save(summary['model'].state_dict(), os.path.join(summary['out'], f'rank{rank}.pt'))\n")
    settings = {**TINY, "masks": str(store), "root": str(sample_root), "out": str(tmp_path / "ddp"),
                "iters": 3, "lr": 1e-3, "val_limit": 2}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(script), json.dumps(settings)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["world_size"] == 2 and ck["samples"] == 3 * 2 * 2
    single = train(cfg(store, sample_root, tmp_path / "one", iters=3, lr=1e-3, batch_size=4))
    torch.manual_seed(0)  # the trainer's seed: the initial weights of every run above
    init = build_model("rat-small", 1, width=8)
    moved = 0
    for k, v in single["model"].state_dict().items():
        torch.testing.assert_close(r0[k], v, rtol=1e-4, atol=1e-5, msg=k)
        moved += not torch.allclose(v, init.state_dict()[k].to(v.dtype))
    assert moved > 10
    assert np.isfinite([r["loss"] for r in map(json.loads, (tmp_path / "ddp" / "metrics.jsonl").read_text()
                                                  .splitlines()) if r["kind"] == "train"]).all()


def test_memory_policy_changes_nothing_but_memory(store, sample_root, tmp_path):
    """`--memory` recomputes activations in backward instead of storing them: the same training."""
    runs = {m: train(cfg(store, sample_root, tmp_path / m, iters=3, memory=m, lr=1e-3))
            for m in ("selective", "none")}
    a, b = (train_losses(tmp_path / m) for m in ("selective", "none"))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6)
    for (name, pa), pb in zip(runs["selective"]["model"].state_dict().items(),
                              runs["none"]["model"].state_dict().values(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-6, msg=name)
    result = CliRunner().invoke(main, ["--help"])
    assert "--memory [selective|full|none]" in result.output and "--fr-norm [image|batch]" in result.output


def test_training_never_reads_a_test_image_unless_asked_to(store, sample_root, tmp_path, monkeypatch):
    """Every file the trainer opens is recorded: the test split's files are among them only with
    --val-split test (the authors' practice, which also says so)."""
    import builtins
    import io

    index = [e for e in load_index(load_dataset("sample"), sample_root) if e.group == "ct"]

    def files(split: str) -> set[str]:
        return {str((sample_root / rel).resolve()) for e in index if e.split == split for rel in (e.lq, e.hq)}

    test_files = files("test")
    opened: list[str] = []
    real_open = builtins.open

    def recording_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)):
            opened.append(str(Path(file).resolve()))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording_open)
    monkeypatch.setattr(io, "open", recording_open)
    cache = tmp_path / "cache"  # a cold image cache: the run reads and caches what it uses
    summary = train(cfg(store, sample_root, tmp_path / "val", iters=2, eval_every=1, cache=str(cache),
                        val_limit=None))
    assert summary["val"]["images"] == 1                                 # the one val image of the group
    assert files("train") <= set(opened) and files("val") <= set(opened)  # the recorder sees what is read
    assert not test_files & set(opened)
    opened.clear()
    train(cfg(store, sample_root, tmp_path / "test", iters=1, cache=str(cache), val_split="test",
              val_limit=None))
    assert test_files & set(opened)                                      # asked for: read, and recorded
    ck = load_checkpoint(tmp_path / "test" / "best.pt")
    assert ck["selection"]["split"] == "test" and ck["config"]["val_split"] == "test"
    folder = export_model(tmp_path / "test" / "best.pt", tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["selection"]["split"] == "test"
    assert "selected on the test split" in (folder / "README.md").read_text()


def test_label_bytes_are_hashed_once_before_the_first_step_and_not_again_when_unchanged(
        store, sample_root, tmp_path, monkeypatch):
    """Before the first step every label map the run uses is read and hashed once (not again by the patch
    dataset or validation); a second run on unchanged store objects hashes none (the verification cache),
    and a label chunk changed between runs is hashed again and refused."""
    import shutil

    from rat.shared.store import labels as store_labels

    monkeypatch.setenv("RAT_CACHE_DIR", str(tmp_path / "fresh-cache"))
    hashed: list[tuple[int, ...]] = []
    real = store_labels.labels_sha256
    monkeypatch.setattr(store_labels, "labels_sha256", lambda a: (hashed.append(a.shape), real(a))[1])
    own = Path(shutil.copytree(store, tmp_path / "own.zarr"))
    index = load_index(load_dataset("sample"), sample_root)
    used = [e for e in index if e.group == "ct" and e.split != "test"]
    train(cfg(own, sample_root, tmp_path / "a", iters=2, eval_every=1, val_limit=None))
    assert len(hashed) == len(used) and len(used) >= 2          # each used map once, none twice
    hashed.clear()
    train(cfg(own, sample_root, tmp_path / "b", iters=2, eval_every=1, val_limit=None))
    assert hashed == []
    chunk = own / "labels" / image_key(used[0].id) / "0" / "c" / "0" / "0"  # another tool changes its bytes
    swap = next(c for c in (own / "labels").glob("*/0/c/0/0") if c.read_bytes() != chunk.read_bytes())
    chunk.write_bytes(swap.read_bytes())
    with pytest.raises(StoreError, match=used[0].id):
        train(cfg(own, sample_root, tmp_path / "c", iters=1))
    assert hashed == [used[0].shape[:2]]


def test_best_pt_is_chosen_on_validation(store, sample_root, tmp_path):
    out = tmp_path / "run"
    train(cfg(store, sample_root, out, iters=6, eval_every=2, lr=3e-3, val_limit=None))
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["kind"] == "val"]
    assert [r["step"] for r in val] == [2, 4, 6] and {r["split"] for r in val} == {"val"}
    best = max(val, key=lambda r: (r["psnr"], -r["step"]))                # first of the highest PSNR
    ck = load_checkpoint(out / "best.pt")
    assert ck["step"] == best["step"] == ck["selection"]["step"] and ck["selection"]["split"] == "val"
    assert ck["selection"]["value"] == pytest.approx(best["psnr"]) and ck["selection"]["metric"] == "psnr"
    assert load_checkpoint(out / "last.pt")["selection"]["step"] == best["step"]


def test_select_ssim_best_pt_the_curves_mark_and_the_card_agree(store, sample_root, tmp_path, monkeypatch):
    from matplotlib.axes import Axes

    marks = []
    real = Axes.axvline
    monkeypatch.setattr(Axes, "axvline", lambda self, x, *a, **k: marks.append(x) or real(self, x, *a, **k))
    out = tmp_path / "run"
    summary = train(cfg(store, sample_root, out, iters=6, eval_every=1, lr=3e-3, val_limit=None,
                        select="ssim"))
    val = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in val if r["kind"] == "val"]
    ssim = [r["ssim"] for r in val]
    step = val[ssim.index(max(ssim))]["step"]  # the reference: the first step of the highest SSIM
    ck = load_checkpoint(out / "best.pt")
    assert ck["step"] == ck["selection"]["step"] == summary["selection"]["step"] == step
    assert ck["selection"]["metric"] == "ssim" and ck["selection"]["value"] == pytest.approx(max(ssim))
    assert marks[-3:] == [step] * 3  # the final curves: one mark per panel
    folder = export_model(out / "best.pt", tmp_path / "model")
    card = (folder / "README.md").read_text()
    assert f"best.pt was chosen by the val split's SSIM: SSIM {max(ssim):.4f} at step {step}" in card
    with pytest.raises(TrainError, match="cannot resume with other settings: `select` 'psnr'"):
        Run.open({**cfg(store, sample_root, out, iters=6), "resume": True, "select": "psnr"})


def test_ranks_that_would_continue_from_different_checkpoints_stop_at_once(store, sample_root, tmp_path,
                                                                          monkeypatch):
    """Under torchrun every rank reads last.pt itself: ranks whose --out differ (a folder local to each node)
    would train on from different steps; all of them refuse, before the first step."""
    monkeypatch.setattr(trainer, "gather", lambda rt, items: [0, *items])   # rank 0 found no last.pt
    train(cfg(store, sample_root, tmp_path / "r", iters=2, stop_at=1))
    run = Run.open(cfg(store, sample_root, tmp_path / "r", iters=2, resume=True))
    with pytest.raises(TrainError, match=r"continue from different checkpoints \(steps 0, 1 by rank\): --out "
                                         "must be one folder that every node sees"):
        trainer._train(run, Runtime(1, 2, torch.device("cpu")))


@pytest.mark.parametrize("where", ["step", "validation"])
def test_a_cuda_error_ends_the_run_in_one_line_with_last_pt_intact(store, sample_root, tmp_path, monkeypatch,
                                                                   where):
    """A CUDA fault (sticky: the process cannot use the GPU any more) in a step or at the next
    synchronisation: one line naming the fault and the way on, exit status 4, last.pt as last written."""
    out = tmp_path / "run"
    fault = RuntimeError("CUDA error: an illegal memory access was encountered\nCUDA kernel errors might be "
                         "asynchronously reported at some other API call")
    real_step, real_validation, steps = trainer.train_step, trainer.validation, []

    def step(*args, **kwargs):
        steps.append(1)
        if where == "step" and len(steps) == 3:
            raise fault
        return real_step(*args, **kwargs)

    def validation(*args, **kwargs):
        if where == "validation" and len(steps) == 3:
            raise fault
        return real_validation(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer, "validation", validation)
    args = ["--masks", store, "--dataset", "sample", "--root", sample_root, "--group", "ct", "--out", out,
            *tiny_train_args(iters=6, save_every=2, eval_every=3)]
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 4, result.output
    [line] = [x for x in result.output.splitlines() if x.startswith("Error")]
    after = 2 if where == "step" else 3
    assert line == (f"Error: {out}: the GPU failed after step {after} (CUDA error: an illegal memory access "
                    "was encountered CUDA kernel errors might be asynchronously reported at some other API "
                    f"call); {out / 'last.pt'} (step 2) is intact: continue with --backend sparse --resume "
                    "(the same results without the flex kernel)")
    assert load_checkpoint(out / "last.pt")["step"] == 2
    assert not list(out.glob(".*.tmp"))
    monkeypatch.setattr(trainer, "train_step", real_step)
    monkeypatch.setattr(trainer, "validation", real_validation)
    resumed = CliRunner().invoke(main, [str(a) for a in args] + ["--backend", "sparse", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "last.pt")["step"] == 6


def test_training_without_validation_images_says_so(store, sample_root, tmp_path, capsys):
    """No validation image (here --val-limit 0): a warning says that no best.pt is chosen; last.pt is kept."""
    summary = train({**TINY_RUN, "masks": str(store), "root": str(sample_root), "out": str(tmp_path / "r"),
                     "iters": 2, "val_limit": 0})
    out = capsys.readouterr().out
    assert ("warning: no validation images (val split of sample/ct, --val-limit 0): nothing chooses best.pt, "
            "so none is written; last.pt holds the last weights") in out
    assert summary["step"] == 2 and sorted(p.name for p in (tmp_path / "r").glob("*.pt")) == ["last.pt"]
