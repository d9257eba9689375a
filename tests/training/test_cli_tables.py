"""`rat-train models` (rat.training.cli_tables): every model registered in the entry-point group, with its
package and whether it takes label maps, and one model's parameters; `rat-train table` is tested in
test_table.py."""

import importlib.metadata

from click.testing import CliRunner

from rat.training.cli import main
from rat.training.model.registry import build_network


def test_models_lists_every_registered_model_with_its_package_and_label_use():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    registered = {ep.name for ep in importlib.metadata.entry_points(group="rat.models")}
    assert set(lines) == registered and {"rat", "rat-small", "srcnn"} <= registered
    assert "label maps" in lines["rat"] and "rat.training.model.network:RAT" in lines["rat"]
    assert "region-free" in lines["srcnn"] and "(rat-restore " in lines["srcnn"]


def test_models_name_lists_the_parameters_the_network_is_built_with():
    result = CliRunner().invoke(main, ["models", "rat-small"])
    assert result.exit_code == 0, result.output
    listed = dict(line.split(None, 1) for line in result.output.splitlines())
    net = build_network("rat-small", 1)       # what the listed defaults build
    assert int(listed["width"]) == net.intro.out_channels == 16
    assert int(listed["num_groups"]) == len(net.middle_blks) and listed["attention"] == "'rmsa'"
    result = CliRunner().invoke(main, ["models", "nosuch"])
    assert result.exit_code == 1 and result.output.startswith("Error: NAME: unknown model 'nosuch'; choose")
