"""Packaging: a regular (wheel) install carries the `rat.*` namespace and the dataset definitions."""

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_maps_folders_under_the_rat_namespace(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("rat_restore-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in ("rat/shared/io/__init__.py", "rat/precompute/cli.py", "rat/training/__init__.py",
                     "rat/data_manifests/tma.toml", "rat/data_manifests/sample.toml"):
        assert expected in names
    for folder in ("precompute", "shared", "training", "data_manifests"):  # subpackages included
        for source in (REPO / folder).rglob("*.py"):
            assert f"rat/{source.relative_to(REPO).as_posix()}" in names, source
    assert not any(n.startswith(("shared/", "training/", "precompute/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "rat-precompute = rat.precompute.cli:main" in text and "rat-train = rat.training.cli:main" in text
    target = tmp_path / "installed"                # a regular install of the wheel: every package walks
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True)
    code = ("import json, pkgutil, rat, rat.training.model.network\n"
            "print(rat.training.model.network.__file__)\n"
            "print(json.dumps([n for _, n, p in pkgutil.walk_packages(rat.__path__, 'rat.') if p]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(target)})
    where, packages = done.stdout.splitlines()
    assert where.startswith(str(target))
    folders = sorted({p.parent for folder in ("precompute", "shared", "training", "data_manifests")
                      for p in (REPO / folder).rglob("*.py")})
    expected = {".".join(["rat", *f.relative_to(REPO).parts]) for f in folders}
    assert set(json.loads(packages)) == expected


def test_installed_import_names_and_help():
    import rat.precompute
    import rat.shared
    import rat.training

    for mod in (rat.precompute, rat.shared, rat.training):
        assert Path(mod.__file__).resolve().parent.parent == REPO   # editable install maps the folders
    from rat.precompute.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "masks" in result.output and "index" in result.output


def test_every_command_documents_every_option():
    import click

    from rat.precompute.cli import main as pre
    from rat.training.cli import main as train

    for group in (pre, train):
        commands = [group] + [group.commands[c] for c in group.commands]
        for cmd in commands:
            assert cmd.help, f"{cmd.name} has no help"
            for p in cmd.params:
                if isinstance(p, click.Option) and p.name not in ("help", "version"):
                    assert p.help, f"{cmd.name} --{p.name} has no help text"


@pytest.mark.parametrize("module, args", [
    ("rat.precompute.cli", ["--help"]),
    ("rat.training.cli", ["--help"]),
    ("rat.training.cli", ["restore", "--help"]),
    ("rat.training.cli", ["eval", "--help"]),
])
def test_help_imports_neither_torch_nor_segment_anything(module, args):
    """Help is instant: heavy modules are imported by the commands that run, not by the help."""
    code = (f"import sys; from {module} import main\n"
            f"try:\n    main({args!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
            "heavy = [m for m in ('torch', 'segment_anything', 'zarr', 'distributed') if m in sys.modules]\n"
            "print('HEAVY', heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage:" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "HEAVY []", done.stdout[-300:]





def test_the_distribution_is_rat_restore_and_every_install_hint_names_it():
    """`rat` on the package index is an unrelated project (reservoir monitoring): the distribution has a name
    of its own, and the README and every message that says what to install use it; the import package and
    the commands keep their names."""
    import importlib.metadata
    import re

    from rat.shared import DISTRIBUTION, __version__

    dist = importlib.metadata.distribution("rat-restore")
    assert DISTRIBUTION == "rat-restore" and dist.version == __version__
    scripts = {ep.name: ep.value for ep in dist.entry_points if ep.group == "console_scripts"}
    assert scripts == {"rat-precompute": "rat.precompute.cli:main", "rat-train": "rat.training.cli:main"}
    texts = {"README.md": (REPO / "README.md").read_text()}
    texts.update({str(p.relative_to(REPO)): p.read_text() for folder in ("precompute", "training", "shared")
                  for p in (REPO / folder).rglob("*.py")})
    bare = {name for name, text in texts.items() if re.search(r"(?<![\w-])rat\[|install rat\b(?!-)", text)}
    assert not bare, bare
    assert "pip install 'rat-restore[sam-hq]'" in texts["README.md"]
    from rat.shared.regions.sam_config import SAM_HQ

    assert SAM_HQ.install == "pip install rat-restore[sam-hq]"
    result = CliRunner().invoke(__import__("rat.training.cli", fromlist=["main"]).main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
