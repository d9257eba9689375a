"""Run folders (rat.training.run): settings made and checked once, last.pt read once, resume rules."""

import json

import pytest
import torch
from helpers import TINY_RUN

from rat.training import config, trainer
from rat.training import run as run_module
from rat.training.config import TrainError
from rat.training.run import LAST, Run
from rat.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


def settings(store, root, out, **kw) -> dict:
    return {**TINY_RUN, "masks": str(store), "root": str(root), "out": str(out), **kw}


def counting(calls: list, fn):
    """``fn``, recording the first argument of every call in ``calls``."""
    def wrapper(*args, **kwargs):
        calls.append(args[0])
        return fn(*args, **kwargs)
    return wrapper


def test_a_resumed_run_reads_last_pt_once_and_checks_its_settings_once(sample_store, sample_root, tmp_path,
                                                                      monkeypatch):
    train(settings(sample_store, sample_root, tmp_path / "r", iters=2, stop_at=1))
    loads, checks, data = [], [], []
    monkeypatch.setattr(run_module, "load_checkpoint", counting(loads, run_module.load_checkpoint))
    monkeypatch.setattr(config, "validate", counting(checks, config.validate))
    monkeypatch.setattr(trainer, "load_data", counting(data, trainer.load_data))
    summary = train(settings(sample_store, sample_root, tmp_path / "r", iters=2, resume=True))
    assert summary["step"] == 2
    assert loads == [tmp_path / "r" / LAST] and len(checks) == 1 and len(data) == 1


def test_resume_refuses_other_settings_and_a_fresh_run_a_used_folder(sample_store, sample_root, tmp_path):
    train(settings(sample_store, sample_root, tmp_path / "r", iters=2, stop_at=1))
    with pytest.raises(TrainError, match=r"last.pt: cannot resume with other settings: `lr` 0.001"):
        Run.open(settings(sample_store, sample_root, tmp_path / "r", resume=True, iters=2, lr=1e-3))
    with pytest.raises(TrainError, match="already holds a run"):
        Run.open(settings(sample_store, sample_root, tmp_path / "r", iters=2))
    run = Run.open(settings(sample_store, sample_root, tmp_path / "r", resume=True, iters=2, val_limit=2))
    assert run.progress.step == 1 and run.cfg.val_limit == 2 and run.resumed["step"] == 1
    fresh = Run.open(settings(sample_store, sample_root, tmp_path / "new", iters=2))
    assert fresh.resumed is None and fresh.progress.step == 0


def test_a_run_killed_while_writing_resumes_from_its_last_complete_files(sample_store, sample_root, tmp_path):
    """What a process killed mid-write leaves (a temporary checkpoint, a torn metrics line) is never read,
    and is cleared when the run starts again; `resume` without last.pt starts a fresh run."""
    out = tmp_path / "r"
    fresh = Run.open(settings(sample_store, sample_root, out, iters=3, resume=True))
    assert fresh.resumed is None and fresh.progress.step == 0
    train(settings(sample_store, sample_root, out, iters=3, stop_at=2, resume=True))
    (out / f".{LAST}.4242.tmp").write_bytes(b"half a checkpoint")  # rank 0 killed in torch.save
    with open(out / "metrics.jsonl", "a") as fh:                   # ... or in the middle of a line
        fh.write('{"step": 3, "kind": "tr')
    run = Run.open(settings(sample_store, sample_root, out, iters=3, resume=True))
    assert run.progress.step == 2
    summary = train(run)
    assert summary["step"] == 3 and sorted(p.name for p in out.iterdir() if p.name.endswith(".tmp")) == []
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3]


def test_a_run_folder_with_checkpoints_is_never_overwritten(sample_store, sample_root, tmp_path):
    """The run-folder rule: --resume without last.pt but with best.pt (or any checkpoint) is refused, naming
    the folder and what it holds; a new run into a folder with a checkpoint needs --overwrite; the folder
    is untouched by a refusal."""
    out = tmp_path / "r"
    train(settings(sample_store, sample_root, out, iters=2, eval_every=1))
    (out / LAST).unlink()                                   # best.pt and metrics.jsonl are left
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert "best.pt" in before and "metrics.jsonl" in before
    with pytest.raises(TrainError, match=rf"^{out}: holds best.pt but no last.pt, so there is nothing to "
                                         "resume from and a fresh start would replace them"):
        Run.open(settings(sample_store, sample_root, out, iters=2, resume=True))
    with pytest.raises(TrainError, match=rf"^{out}: already holds a run \(best.pt\); pass `resume` to "
                                         "continue it, `overwrite` to replace it"):
        Run.open(settings(sample_store, sample_root, out, iters=2))
    (out / "step_1.pt").write_bytes(before["best.pt"])       # any other checkpoint counts as well
    (out / "best.pt").unlink()
    with pytest.raises(TrainError, match=r"holds step_1.pt but no last.pt"):
        Run.open(settings(sample_store, sample_root, out, iters=2, resume=True))
    (out / "best.pt").write_bytes(before["best.pt"])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
    with pytest.raises(config.ParamError, match="overwrite"):
        Run.open(settings(sample_store, sample_root, out, iters=2, resume=True, overwrite=True))
    summary = train(settings(sample_store, sample_root, out, iters=1, eval_every=100, overwrite=True))
    assert summary["step"] == 1 and sorted(p.name for p in out.glob("*.pt")) == ["best.pt", LAST]  # no step_1
    assert torch.load(out / "best.pt", weights_only=True)["step"] == 1                            # new ones
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1]


def test_a_run_writes_last_pt_before_its_first_best_pt(sample_store, sample_root, tmp_path, monkeypatch):
    """So that a run killed after its first validation (torchrun restarts it with --resume) finds last.pt
    and never leaves best.pt alone, which --resume would refuse."""
    saved = []
    original = Run.save
    monkeypatch.setattr(Run, "save",
                        lambda self, name, state: saved.append(name) or original(self, name, state))
    train(settings(sample_store, sample_root, tmp_path / "r", iters=3, eval_every=1, save_every=100))
    assert saved[:2] == [LAST, "best.pt"] and saved[-1] == LAST


def test_a_run_records_where_its_store_and_data_are_so_it_is_found_from_anywhere(sample_store, sample_root,
                                                                                  tmp_path, monkeypatch):
    """Relative --masks, --root and --out are recorded resolved: `eval` of the checkpoint by its absolute
    path works from any working directory."""
    import shutil

    from click.testing import CliRunner

    from rat.training.cli import main

    work = tmp_path / "work"
    shutil.copytree(sample_store, work / "sample.zarr")
    monkeypatch.chdir(work)
    train(settings("sample.zarr", sample_root, "runs/ct", iters=1))
    ck = torch.load(work / "runs" / "ct" / LAST, weights_only=True)
    assert ck["config"]["masks"] == str(work / "sample.zarr")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["eval", "--checkpoint", str(work / "runs" / "ct" / LAST), "--csv",
                                       str(tmp_path / "e.csv"), "--no-progress"])
    assert result.exit_code == 0 and "LQ input" in result.output, result.output


def test_recorded_location_finds_relative_paths_of_older_runs(tmp_path, monkeypatch):
    """A run that recorded `sample.zarr` and out `runs/ct` was started in the folder two above the run
    folder: the store is found there from any working directory; else beside the checkpoint."""
    from rat.training.run import recorded_location

    (tmp_path / "proj" / "runs" / "ct").mkdir(parents=True)
    (tmp_path / "proj" / "sample.zarr").mkdir()
    (tmp_path / "proj" / "runs" / "ct" / "index.csv").write_text("")
    checkpoint = tmp_path / "proj" / "runs" / "ct" / "best.pt"
    monkeypatch.chdir(tmp_path)
    assert recorded_location("sample.zarr", checkpoint, "runs/ct") == str(tmp_path / "proj" / "sample.zarr")
    assert recorded_location("index.csv", checkpoint, "runs/ct") == str(checkpoint.parent / "index.csv")
    assert recorded_location("s3://bucket/s.zarr", checkpoint, "runs/ct") == "s3://bucket/s.zarr"
    assert recorded_location("nowhere.zarr", checkpoint, "runs/ct") == "nowhere.zarr"
