"""Plug-ins (rat.shared.plugins): one way to find generators and models by name in entry-point groups."""

import importlib.metadata

import pytest

from rat.shared import DISTRIBUTION, plugins
from rat.shared.errors import ParamError


class Boom(RuntimeError):
    pass


def test_this_packages_entries_come_first_and_are_no_plug_ins():
    found = plugins.entry_points("rat.models", "model", Boom, first=("rat", "rat-small"))
    assert list(found)[:2] == ["rat", "rat-small"]
    assert {plugins.origin(ep) for ep in found.values() if ep.name in ("rat", "srcnn")} == {DISTRIBUTION}
    assert not {"rat", "srcnn"} & set(plugins.plugin_origins(found))
    generators = plugins.entry_points("rat.region_generators", "generator", Boom)
    assert {"sam", "superpixels"} <= set(generators)


def test_unknown_names_broken_imports_and_wrong_names_are_one_line():
    found = {"ok": importlib.metadata.EntryPoint("ok", "rat.shared.regions.superpixels:SuperpixelGenerator",
                                                 "g"),
             "gone": importlib.metadata.EntryPoint("gone", "no_such_module_here:Thing", "g")}
    with pytest.raises(ParamError, match="unknown widget 'x'; choose one of ok, gone"):
        plugins.load(found, "x", "widget", Boom, "name", "g")
    with pytest.raises(Boom, match=r"widget 'gone' \(no_such_module_here:Thing, from \?\) does not load: "):
        plugins.load(found, "gone", "widget", Boom, "name", "g")
    with pytest.raises(Boom, match="has name 'superpixels'; a widget's `name` must be the name it is"):
        plugins.load(found, "ok", "widget", Boom, "name", "g")
    with pytest.raises(ParamError, match=f"none \\(installing {DISTRIBUTION} registers them in g\\)"):
        plugins.load({}, "x", "widget", Boom, "name", "g")
