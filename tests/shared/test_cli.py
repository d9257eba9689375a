"""CLI parts (rat.shared.cli): the package's errors and missing files become one line naming flags; bugs keep
their traceback; older command names stay as hidden aliases."""

import click
import pytest
from click.testing import CliRunner

from rat.shared.cli import alias, cli_errors
from rat.shared.errors import ParamError, RatError


def command(raised: BaseException) -> click.Command:
    @click.command()
    def cmd():
        with cli_errors({"n_workers": "--workers"}):
            raise raised
    return cmd


@pytest.mark.parametrize("raised, line", [
    (ParamError("n_workers", "must be >= 1; see `batch_size`"),
     "Error: --workers: must be >= 1; see --batch-size"),
    (RatError("store.zarr: made with another configuration; use `overwrite`"),
     "Error: store.zarr: made with another configuration; use --overwrite"),
    (FileNotFoundError(2, "No such file or directory", "scan.dcm"),
     "Error: [Errno 2] No such file or directory: 'scan.dcm'"),
    (PermissionError(13, "Permission denied", "/data"), "Error: [Errno 13] Permission denied: '/data'"),
])
def test_the_packages_errors_and_input_faults_are_one_line(raised, line):
    result = CliRunner().invoke(command(raised), [])
    assert result.exit_code == 1 and result.output.strip() == line


@pytest.mark.parametrize("bug", [ValueError("shapes (3,) and (4,) not aligned"), KeyError("x"),
                                 OSError("disk quota"), TypeError("bad operand")])
def test_anything_else_is_a_bug_and_keeps_its_traceback(bug):
    result = CliRunner().invoke(command(bug), [])
    assert result.exit_code == 1 and result.exception is bug  # not turned into a click error


def test_an_alias_is_the_same_command_hidden():
    @click.group()
    def main():
        pass

    @main.command("index")
    def index():
        click.echo("ran")

    main.add_command(alias(index, "manifest"))
    runner = CliRunner()
    assert runner.invoke(main, ["manifest"]).output == "ran\n" == runner.invoke(main, ["index"]).output
    listing = runner.invoke(main, ["--help"]).output
    assert "index" in listing and "manifest" not in listing
