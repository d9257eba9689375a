"""The kernel check that a crash cannot defeat (rat.training.model.probe, and ``auto`` through it): checks
that answer, raise, exit, crash with SIGSEGV or hang, each in a spawned child, and verdicts kept on disk.

The checks are stand-ins from ``helpers`` (a real CUDA fault needs a GPU; these end the child the same
ways)."""

from __future__ import annotations

import logging

import helpers
import pytest
import torch

from rat.training.model import attention, probe
from rat.training.model.attention import auto_backend

CPU = torch.device("cpu")
LOGGER = "rat.training.model.attention"


@pytest.fixture
def fresh(monkeypatch):
    """No decision of ``auto`` taken yet in this process."""
    monkeypatch.setattr(attention, "_AUTO", {})


@pytest.mark.parametrize(("check", "answer"), [
    (helpers.check_passes, None),
    (helpers.check_disagrees, "differs from sparse by 1 in the output (allowed 0.001)"),
    (helpers.check_raises, "failed (RuntimeError: CUDA error: an illegal memory access was encountered CUDA "
                           "kernel errors might be ...)"),
    (helpers.check_exits, "crashed (exit status 3)"),
    (helpers.check_segfaults, "crashed (killed by signal SIGSEGV)"),
])
def test_the_child_answers_or_the_way_it_ended_is_the_answer(check, answer):
    assert probe.isolated(check, CPU, 16, "flex", "sparse", torch.float32, timeout=120) == answer


def test_a_child_that_hangs_is_killed_at_the_timeout():
    assert probe.isolated(helpers.check_hangs, timeout=3) == "did not finish within 3 s (killed)"


def test_a_crash_falls_back_with_one_line_and_the_verdict_is_kept_on_disk(fresh, monkeypatch, caplog,
                                                                            tmp_path):
    monkeypatch.setenv("RAT_CACHE_DIR", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert auto_backend(CPU, 16, isolate=True, check=helpers.check_segfaults) == "sparse"
    [record] = caplog.records
    assert record.getMessage() == ("region attention on cpu (float32, heads of 16): flex crashed (killed by "
                                   "signal SIGSEGV); using sparse instead (the same results, slower)")
    [saved] = (tmp_path / probe.FOLDER).glob("flex-*.json")
    # a new process (no decision in memory) recalls the verdict: the check does not run again
    monkeypatch.setattr(attention, "_AUTO", {})
    assert auto_backend(CPU, 16, isolate=True, check=helpers.check_passes) == "sparse"
    # another precision is another setting: checked apart (and passes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert auto_backend(CPU, 16, isolate=True, check=helpers.check_passes) == "flex"
    assert len(list((tmp_path / probe.FOLDER).glob("flex-*.json"))) == 2
    saved.unlink()  # forgotten: checked again
    monkeypatch.setattr(attention, "_AUTO", {})
    assert auto_backend(CPU, 16, isolate=True, check=helpers.check_passes) == "flex"


def test_verdicts_are_keyed_by_versions_device_precision_and_head_size(tmp_path):
    key = probe.setting(CPU, torch.bfloat16, 32, "flex", "sparse")
    assert key["torch"] == torch.__version__ and key["dtype"] == "bfloat16" and key["head_dim"] == 32
    assert {"triton", "cuda", "rat", "revision"} <= set(key)
    probe.remember(key, None, tmp_path)
    assert probe.recalled(key, tmp_path) == (True, None)
    for change in ({"torch": "2.11.0+cu130"}, {"triton": "3.6.0"}, {"head_dim": 16}, {"dtype": "float32"},
                   {"gpu": "NVIDIA H200"}, {"revision": probe.REVISION + 1}):
        assert probe.recalled({**key, **change}, tmp_path) == (False, None), change
    (tmp_path / next(p.name for p in tmp_path.iterdir())).write_text("{torn")
    assert probe.recalled(key, tmp_path) == (False, None)  # a torn file: check again
