"""Run folders (rat.training.run): settings made and checked once, last.pt read once, resume rules."""

import json

import pytest
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
