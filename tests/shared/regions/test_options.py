"""The command line's generator options and a generator's keyword arguments (rat.shared.regions.options), from
the generator contract alone: a plug-in (the example package, registered here in-process) gets what a builtin
gets, and the code that serves generators names none."""

import ast
import importlib.metadata
from pathlib import Path

import pytest

from rat.shared import regions
from rat.shared.regions import GeneratorError
from rat.shared.regions.options import (
    generator_kwargs,
    generator_options,
    generators_help,
    model_types_help,
    parse_param,
)

REPO = Path(__file__).resolve().parents[3]


def by_flag():
    return {o.flag: o for o in generator_options()}


def test_every_parameter_is_an_option_with_its_default_shared_where_the_flag_is(tiles):
    options = by_flag()
    assert options["--tiles-size"].targets == {"tiles": "size"} and options["--tiles-size"].kind is int
    assert options["--tiles-size"].help == "tiles: size (default 64)."
    assert options["--sp-method"].choices == ("slic", "felzenszwalb")               # parameter_choices
    shared = options["--points-per-side"]                                            # the SAM family's
    assert shared.targets == {n: "points_per_side" for n in ("efficientvit-sam", "sam", "sam-hq")}
    assert shared.help == "efficientvit-sam, sam, sam-hq: points_per_side (default 32)."
    assert not {"--checkpoint", "--model-type", "--device", "--max-memory"} & set(options)  # the command's
    assert "--sp-n-segments" not in {o.flag for o in generator_options(taken={"--sp-n-segments"})}


def test_help_names_each_generator_by_its_summary_and_plugins_by_their_origin(tiles):
    text = generators_help()
    assert "superpixels (scikit-image's SLIC or Felzenszwalb superpixels, no weights)" in text
    assert "plug-ins: tiles (square tiles of `size` pixels, an example plug-in; ?)" in text  # no dist
    assert "sam-hq: vit_b, vit_l, vit_h, vit_tiny (default vit_b)" in model_types_help()


def test_a_plugin_that_does_not_load_costs_its_own_options_only(tiles, monkeypatch):
    found = dict(regions.registered())
    found["broken"] = importlib.metadata.EntryPoint("broken", "no_such_module:Gen", regions.ENTRY_POINT_GROUP)
    monkeypatch.setattr(regions, "registered", lambda: found)
    assert "--tiles-size" in by_flag()
    assert "broken (does not load: generator 'broken'" in generators_help()


def test_keyword_arguments_take_what_applies_and_refuse_the_rest(tiles):
    assert generator_kwargs("tiles", checkpoint="w.pth", device="cpu", options={"--tiles-size": 32}) == \
        {"size": 32}                                   # no checkpoint or device: it takes neither
    assert generator_kwargs("sam", checkpoint="w.pth", device="cpu", model_type="vit_l",
                            options={"--points-per-side": 8}, params={"points_per_batch": 4}) == \
        {"checkpoint": "w.pth", "device": "cpu", "model_type": "vit_l", "points_per_side": 8,
         "points_per_batch": 4}
    cases = [
        (dict(options={"--tiles-size": 32}), "superpixels",
         "--tiles-size applies to the tiles generator, not to superpixels"),
        (dict(options={"--points-per-side": 8}), "tiles",
         "--points-per-side applies to the efficientvit-sam, sam, sam-hq generators, not to tiles"),
        (dict(max_memory=10**9), "tiles", "--max-memory does not apply to the tiles generator"),
        (dict(options={"--tiles-size": 32}, params={"size": 8}), "tiles",
         "--param size=8 and --tiles-size both set size: give it once"),
    ]
    for kwargs, name, message in cases:
        with pytest.raises(GeneratorError) as err:
            generator_kwargs(name, **kwargs)
        assert str(err.value) == message
    assert parse_param("size=32") == ("size", 32) and parse_param("method=slic") == ("method", "slic")
    with pytest.raises(GeneratorError, match="--param: 'size' is not NAME=VALUE"):
        parse_param("size")


def test_the_code_that_serves_generators_names_none():
    """The command lines, the option builder, the cluster and restoring take every generator from the
    registry: no builtin's name is written in them (the default generator is the registry's)."""
    names = set(regions.generator_names())
    stray = []
    for source in ("precompute/cli.py", "precompute/cluster.py", "precompute/runner.py",
                   "shared/regions/options.py", "training/inference/region_source.py", "training/cli.py"):
        tree = ast.parse((REPO / source).read_text())
        stray += [f"{source}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and n.value in names]
    assert stray == []
