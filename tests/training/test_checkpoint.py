"""Checkpoints (rat.training.checkpoint): weights_only loading, bare state dicts, one-line refusals."""


from fractions import Fraction

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


def test_an_edited_definition_in_a_checkpoint_is_refused(sample_store, sample_root, tmp_path):
    """The definition a checkpoint carries is checked against the SHA-256 recorded beside it."""
    from helpers import TINY_RUN

    from rat.training.checkpoint import checkpoint_dataset
    from rat.training.trainer import train

    train({**TINY_RUN, "masks": str(sample_store), "root": str(sample_root), "out": str(tmp_path / "r"),
           "iters": 1})
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    assert checkpoint_dataset(ck).name == "sample"
    ck["data"]["definition"] = ck["data"]["definition"].replace("norm_high = 255.0", "norm_high = 100.0")
    with pytest.raises(TrainError, match=r"definition in the checkpoint \(sample\) does not match its "
                                         "recorded SHA-256"):
        checkpoint_dataset(ck)


def test_a_checkpoint_of_a_model_not_installed_here_names_its_package(sample_store, sample_root, tmp_path):
    """A colleague's checkpoint of a plug-in model this machine lacks: eval, restore and export say which
    package to install, not "unknown --model"."""
    from click.testing import CliRunner
    from helpers import TINY_RUN

    from rat.training.cli import main
    from rat.training.trainer import train

    train({**TINY_RUN, "masks": str(sample_store), "root": str(sample_root), "out": str(tmp_path / "r"),
           "iters": 1})
    ck = load_checkpoint(tmp_path / "r" / "last.pt")
    ck["model_args"]["name"] = ck["config"]["model"] = "ghost"
    ck["model_args"]["provenance"] = {"name": "ghost", "package": "ghost-models", "version": "1.2",
                                      "class": "ghost_models:Ghost"}
    torch.save(ck, tmp_path / "ghost.pt")
    want = (f"Error: {tmp_path / 'ghost.pt'}: its model 'ghost' (ghost_models:Ghost from ghost-models 1.2) "
            "is not installed here: install that package (`rat-train models` lists those that are)")
    root = ["--root", str(sample_root)]
    for command in (["eval", *root], ["restore", *root, "--out", str(tmp_path / "out")],
                    ["export", "--out", str(tmp_path / "m")]):
        result = CliRunner().invoke(main, [*command, "--checkpoint", str(tmp_path / "ghost.pt")])
        assert result.exit_code == 1 and result.output.strip().splitlines()[-1] == want, result.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "m").exists()


class _Payload:
    """Unpickling this would run a shell command: what a malicious checkpoint holds."""

    def __reduce__(self):
        import os

        return (os.system, ("echo should never run",))


@pytest.mark.parametrize("payload", ["code", "object"])
def test_a_checkpoint_that_would_run_code_is_refused_in_our_own_words(tmp_path, payload):
    """PyTorch's refusal advises loading with weights_only=False ("will likely succeed"): that would run
    the file's code. Ours says what the file holds and that it is refused, without that advice."""
    import pickle

    path = tmp_path / "evil.pt"
    if payload == "code":
        path.write_bytes(pickle.dumps({"model": _Payload()}, protocol=2))
    else:
        torch.save({"model": {"w": torch.zeros(1)}, "extra": Fraction(1, 3)}, path)   # an object
    with pytest.raises(TrainError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert text.startswith(f"{path}: holds code or objects other than tensors and plain values")
    assert "refused for safety and not loaded" in text
    assert "weights_only" not in text and "likely succeed" not in text and "\n" not in text
    if payload == "object":
        assert "(fractions.Fraction)" in text
