"""Checkpoints (rat.training.checkpoint): weights_only loading, bare state dicts, one-line refusals."""


import pytest
import torch

from rat.training.checkpoint import load_checkpoint
from rat.training.config import TrainError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_garbage_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(TrainError, match="bad.pt: not a loadable checkpoint"):
        load_checkpoint(bad)
    torch.save({"step": 3}, bad)
    with pytest.raises(TrainError, match="neither a rat-train checkpoint nor a model state dict"):
        load_checkpoint(bad)

