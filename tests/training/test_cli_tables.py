"""`rat-train models` (rat.training.cli_tables): every model registered in the entry-point group, with its
package and whether it takes label maps; `rat-train table` is tested in test_table.py."""

import importlib.metadata

from click.testing import CliRunner

from rat.training.cli import main


def test_models_lists_every_registered_model_with_its_package_and_label_use():
    result = CliRunner().invoke(main, ["models"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines() if line.strip()}
    registered = {ep.name for ep in importlib.metadata.entry_points(group="rat.models")}
    assert set(lines) == registered and {"rat", "rat-small", "srcnn"} <= registered
    assert "label maps" in lines["rat"] and "rat.training.model.network:RAT" in lines["rat"]
    assert "region-free" in lines["srcnn"] and "(rat-restore " in lines["srcnn"]
