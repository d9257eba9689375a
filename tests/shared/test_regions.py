"""The registry of region generators (rat.shared.regions): found through the entry-point group, this
package's own included; unknown, broken or misnamed generators told in one line."""

import importlib.metadata

import pytest

from rat.shared import plugins, regions
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


def test_parameters_are_checked_before_a_generator_is_built():
    """Names a generator does not take are refused with the list of those it does; values of another kind
    than the default's too; the generator's own refusals of values are one line naming it."""
    known, complete = plugins.parameters(regions.generator_class("superpixels"))
    assert complete and list(known) == ["method", "n_segments", "compactness", "sigma", "scale", "min_size"]
    with pytest.raises(regions.GeneratorError, match=r"^generator superpixels has no parameter 'bogus'; its "
                                                     "parameters: method, n_segments, compactness"):
        regions.build_generator("superpixels", bogus=3)
    for value in ("abc", [1, 2], True, 2.5):
        with pytest.raises(regions.GeneratorError, match=r"n_segments=.* is not an integer \(default 64\)"):
            regions.build_generator("superpixels", n_segments=value)
    with pytest.raises(regions.GeneratorError, match=r"^generator superpixels: compactness: 0: must be "
                                                     "greater than 0$"):
        regions.build_generator("superpixels", compactness=0)
    assert regions.build_generator("superpixels", compactness=5, sigma=0).params["compactness"] == 5
    sam, complete = plugins.parameters(regions.generator_class("sam"))
    assert complete and sam["points_per_side"] == 32 and sam["checkpoint"] is None
    with pytest.raises(regions.GeneratorError, match=r"^generator sam: points_per_side: 0: must be at least "
                                                     "1$"):
        regions.build_generator("sam", points_per_side=0, checkpoint="unused.pth")
    with pytest.raises(regions.GeneratorError, match=r"^generator sam: box_nms_thresh: 1.5: must be between "
                                                     "0 and 1$"):
        regions.build_generator("sam", box_nms_thresh=1.5, checkpoint="unused.pth")
