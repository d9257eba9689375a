"""The architecture, checked on the source: one-way layering, no import cycles, imports at the top, short
modules. Module names come from the package-dir mapping (``shared/store/labels.py`` is
``rat.shared.store.labels``)."""

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FOLDERS = {"precompute": "rat.precompute", "shared": "rat.shared", "training": "rat.training"}
#: Optional or heavy third-party packages a function may import where it needs them (help stays instant,
#: extras stay optional). Everything else, and the package's own modules, is imported at the top of a module;
#: only the command lines (``cli*.py``) import the package's heavy modules inside their commands.
HEAVY = {"torch", "torchvision", "segment_anything", "segment_anything_hq", "efficientsam", "timm",
         "sam2", "distributed", "dask", "dask_cuda", "zarr", "skimage", "scipy", "matplotlib", "safetensors",
         "cv2", "s3fs", "gcsfs", "pydicom", "nibabel", "tifffile", "PIL", "pylibjpeg", "spandrel", "monai",
         "ldctbench", "torchsr"}
#: Which top-level parts may import which (shared imports neither side; the sides never each other).
ALLOWED = {"rat.shared": ("rat.shared",), "rat.precompute": ("rat.shared", "rat.precompute"),
           "rat.training": ("rat.shared", "rat.training")}


def modules() -> dict[str, Path]:
    """Every module of the package by its import name."""
    found = {}
    for folder, package in FOLDERS.items():
        for source in sorted((REPO / folder).rglob("*.py")):
            parts = list(source.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = source
    return found


def imports(name: str, source: Path, known: dict[str, Path]) -> list[tuple[str, bool, int]]:
    """(imported module, whether inside a function, line) of every import in ``source``; ``from pkg import
    name`` counts as an import of ``pkg.name`` when that is a module."""
    tree = ast.parse(source.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f) if n is not f}
    package = name if source.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        local = id(node) in inside
        if isinstance(node, ast.Import):
            found += [(a.name, local, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base]).strip(".")
            for a in node.names:
                full = f"{base}.{a.name}"
                found.append((full if full in known else base, local, node.lineno))
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for m, _, _ in imports(name, source, known) if m in known}
            for name, source in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (or a module importing itself): Tarjan."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]] and cycles({"a": {"b"}, "b": set()}) == []


def test_layering_shared_imports_neither_side_and_the_sides_never_each_other():
    edges = graph()
    for name, targets in edges.items():
        top = ".".join(name.split(".")[:2])
        for target in targets:
            assert target.startswith(ALLOWED[top]), f"{name} imports {target}"


def test_imports_are_at_the_top_except_heavy_and_optional_ones():
    known = modules()
    bad = []
    for name, source in known.items():
        cli = source.name.startswith("cli")
        for module, local, line in imports(name, source, known):
            if not local:
                continue
            ours = module.startswith("rat.")
            if (ours and not cli) or (not ours and module.split(".")[0] not in HEAVY):
                bad.append(f"{source.relative_to(REPO)}:{line} imports {module} inside a function")
    assert bad == []


def test_no_module_is_long():
    for source in modules().values():
        lines = len(source.read_text().splitlines())
        assert lines <= 450, f"{source.relative_to(REPO)} has {lines} lines"


def test_tests_mirror_the_modules():
    """tests/<package>/test_<module>[_<aspect>].py tests rat.<package>.<module>; test_cli_<command>.py a
    command of that package's cli; files directly in tests/ test the whole."""
    known = modules()
    stray = []
    for test in sorted((REPO / "tests").rglob("test_*.py")):
        parts = test.relative_to(REPO / "tests").parts
        if len(parts) == 1:
            continue
        package = ".".join([FOLDERS[parts[0]], *parts[1:-1]])
        stem = test.stem.removeprefix("test_")
        words = stem.split("_")
        if not any(f"{package}.{'_'.join(words[:k])}" in known for k in range(len(words), 0, -1)):
            stray.append(str(test.relative_to(REPO)))
    assert stray == []


def test_every_package_module_is_reachable_from_the_tests():
    """Each module is named by some test: its file (the mirror rule) or its text (imported, or the module
    under test named in the docstring)."""
    tests = sorted((REPO / "tests").rglob("*.py"))
    text = "\n".join([*(str(p.relative_to(REPO)) for p in tests), *(p.read_text() for p in tests)])
    missing = defaultdict(list)
    for name in modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf not in text and name not in text:
            missing[name.rsplit(".", 1)[0]].append(leaf)
    assert dict(missing) == {}


#: Longest function, in lines from its `def` to its last line (docstring included).
MAX_FUNCTION = 80


def test_no_function_is_long():
    long = []
    for source in modules().values():
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION:
                    long.append(f"{source.relative_to(REPO)}:{node.lineno} {node.name} has {lines} lines")
    assert long == []


def test_every_package_folder_is_a_package_the_distribution_lists():
    """A folder of modules has an ``__init__.py`` (no namespace package by accident: pkgutil walks them all),
    and pyproject lists it, so that a regular (wheel) install carries it as the editable one does."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {f: p for p, f in config["package-dir"].items()}
    missing, unlisted = [], []
    for folder, package in folders.items():
        for directory in sorted({p.parent for p in (REPO / folder).rglob("*.py")}):
            if "__pycache__" in directory.parts:
                continue
            if not (directory / "__init__.py").is_file():
                missing.append(str(directory.relative_to(REPO)))
            name = ".".join([package, *directory.relative_to(REPO / folder).parts])
            if name not in listed:
                unlisted.append(name)
    assert missing == [] and unlisted == []


def test_the_package_checks_find_what_they_look_for(tmp_path):
    """The function-length rule counts from the `def` to the last line."""
    tree = ast.parse("def f():\n" + "    x = 1\n" * 90)
    (node,) = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    assert node.end_lineno - node.lineno + 1 == 91 > MAX_FUNCTION
