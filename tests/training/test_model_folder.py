"""`rat-train export` (rat.training.model_folder): a model folder others can read and use."""

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import TINY_RUN

from rat.training.cli import main
from rat.training.trainer import train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(sample_store, sample_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "ct"
    train({**TINY_RUN, "masks": str(sample_store), "root": str(sample_root), "out": str(out), "iters": 1})
    return out / "last.pt"


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_the_files_of_a_model_folder_get_the_mode_of_new_files(checkpoint, tmp_path, umask):
    """safetensors writes its file readable by its owner only; a model folder on a shared drive must be
    readable by colleagues as any file the user makes (the umask decides, as for `touch`)."""
    before = os.umask(umask)
    try:
        result = CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--out",
                                           str(tmp_path / "model")])
        (tmp_path / "touched").touch()
    finally:
        os.umask(before)
    assert result.exit_code == 0, result.output
    expected = (tmp_path / "touched").stat().st_mode & 0o777
    assert expected == 0o666 & ~umask
    for name in ("model.safetensors", "config.json", "README.md"):
        assert (tmp_path / "model" / name).stat().st_mode & 0o777 == expected, name


def test_the_model_card_names_the_distribution_to_install(checkpoint, tmp_path):
    """`rat` on the package index is an unrelated project: the card says what to install."""
    assert CliRunner().invoke(main, ["export", "--checkpoint", str(checkpoint), "--out",
                                     str(tmp_path / "m")]).exit_code == 0
    card = (tmp_path / "m" / "README.md").read_text()
    assert "`pip install rat-restore`" in card
    assert "pip install rat " not in card and "pip install rat[" not in card
