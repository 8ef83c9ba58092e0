"""The package layering, drawn from the imports of every module (module-level and inside
functions): no cycle between tfreid's packages, and the lower packages never reach up."""

import ast
import pathlib

import tfreid

ROOT = pathlib.Path(tfreid.__file__).parent
UNITS = {p.stem for p in ROOT.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}


def _unit(module: str) -> str:
    """`tfreid.engine.trainer` -> `engine`; a top-level module is its own unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imports() -> dict[str, set[str]]:
    """unit -> the tfreid units its modules import."""
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        module = ".".join(("tfreid", *path.relative_to(ROOT).with_suffix("").parts))
        unit = _unit(module.removesuffix(".__init__").removesuffix(".__main__"))
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                if name.startswith("tfreid.") and _unit(name) != unit:
                    edges.setdefault(unit, set()).add(_unit(name))
    return edges


def _reaches(edges, start) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_package_cycle():
    edges = _imports()
    cycles = sorted(unit for unit in edges if unit in _reaches(edges, unit))
    assert not cycles, {unit: sorted(edges[unit]) for unit in cycles}


def test_lower_packages_do_not_import_upper_ones():
    edges = _imports()
    never = {
        "visualize": {"engine", "train", "evaluate"},
        "export": {"engine", "train", "evaluate", "visualize"},
        "models": {"engine", "export", "visualize", "runs", "inference"},
        "layers": {"models", "engine", "export", "visualize"},
        "data": {"models", "layers", "engine", "export", "visualize"},
        "losses": {"models", "engine", "export", "visualize"},
        "metrics": UNITS - {"metrics"},
        "preprocessing": UNITS - {"preprocessing"},
        "checks": UNITS - {"checks"},
    }
    bad = {unit: sorted(_reaches(edges, unit) & forbidden) for unit, forbidden in never.items()}
    assert not any(bad.values()), bad


def test_one_image_decoder_and_resize():
    """Decoding and resizing images is written once, in tfreid.preprocessing."""
    users = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
             if "tf.io.decode_image" in p.read_text() or "tf.image.resize(" in p.read_text()}
    assert users == {"preprocessing.py"}
