"""The registry of region generators (rat.shared.regions): found through the entry-point group, this
package's own included; unknown, broken or misnamed generators told in one line."""

import importlib.metadata

import pytest

from rat.shared import regions
from rat.shared.errors import ParamError


def test_builtin_generators_are_registered_entry_points():
    eps = regions.registered()
    assert list(eps)[:4] == ["efficientvit-sam", "sam", "sam-hq", "superpixels"]
    assert all(eps[n].group == regions.ENTRY_POINT_GROUP and eps[n].dist.metadata["Name"] == "rat-restore"
               for n in ("sam", "sam-hq", "efficientvit-sam", "superpixels"))
    assert regions.plugin_origins() == {}
    assert regions.generator_class("superpixels").name == "superpixels"


def test_unknown_broken_and_misnamed_generators(monkeypatch):
    with pytest.raises(ParamError, match="name: unknown generator 'nope'; choose one of efficientvit-sam, "):
        regions.generator_class("nope")
    fake = {
        "broken": importlib.metadata.EntryPoint("broken", "no_such_module:Gen", regions.ENTRY_POINT_GROUP),
        "other": importlib.metadata.EntryPoint("other", "rat.shared.regions.superpixels:SuperpixelGenerator",
                                               regions.ENTRY_POINT_GROUP),
    }
    monkeypatch.setattr(regions, "registered", lambda: fake)
    with pytest.raises(regions.GeneratorError, match="generator 'broken' .* does not load: No module named"):
        regions.generator_class("broken")
    with pytest.raises(regions.GeneratorError, match="has name 'superpixels'; a generator's `name` must be"):
        regions.generator_class("other")
