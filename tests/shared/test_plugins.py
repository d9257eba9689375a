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


class WithDefaults:
    """A plug-in class taking ``**params`` that lists them (as the SAM family, RAT and the adapters do)."""

    def __init__(self, size: int = 3, **params):
        pass

    @classmethod
    def parameter_defaults(cls):
        return {"rate": 0.5, "name": "x", "sizes": [4, 8], "on": True, "size": 5}


def test_parameters_come_from_the_signature_and_parameter_defaults():
    assert plugins.parameters(WithDefaults) == ({"size": 5, "rate": 0.5, "name": "x", "sizes": [4, 8],
                                                 "on": True}, True)
    def open_ended(a=1, **params): ...
    assert plugins.parameters(open_ended) == ({"a": 1}, False)  # may take others: nothing is refused


@pytest.mark.parametrize(("value", "default", "want"), [
    (3, 5, None), (0, 5, None), (-1, 5, "an integer >= 0"), (2.5, 5, "an integer"), ("3", 5, "an integer"),
    (True, 5, "an integer"), (-1, 0, None), (-1, -3, None),             # a default <= 0: negatives allowed
    (2, 0.5, None), (-0.1, 0.5, "a number >= 0"), ("a", 0.5, "a number"), (False, True, None),
    (1, True, "true or false"), ("y", "x", None), (3, "x", "text"), ([1, 2], [4, 8], None),
    ((), (2, 2), None), ([1, -1], (2, 2), "a list of items each an integer >= 0"), (3, [4, 8], "a list"),
    ([1, "a"], [4], "a list of items each an integer"), ("anything", None, None), (object(), object(), None),
])
def test_values_are_checked_against_their_defaults_kind(value, default, want):
    assert plugins.value_problem(value, default) == want


def test_assignments_read_json_else_text():
    assert plugins.parse_assignment("n=3") == ("n", 3)
    assert plugins.parse_assignment(" sizes =[1, 2]") == ("sizes", [1, 2])
    assert plugins.parse_assignment("method=slic") == ("method", "slic")
    assert plugins.parse_assignment("flag=true") == ("flag", True)
    assert plugins.parse_assignment("expr=a=b") == ("expr", "a=b")
    for bad in ("n", "=3", "2n=3", "a b=1"):
        with pytest.raises(ValueError, match="is not NAME=VALUE"):
            plugins.parse_assignment(bad)
