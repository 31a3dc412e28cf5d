"""The layers go one way. Every module's imports are read with `ast` (at any depth, so an import
inside a function counts too) and checked against the layer of the module it imports.

Layers, bottom to top (docs/architecture.md): the config and the names registry; data, model,
losses, metrics and the convergence rule; the training loop; Ray wiring and tracking; the CLIs;
analysis. A module may import its own layer or a lower one, never a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tunelab", "analysis")

# module-name prefix -> layer; the longest matching prefix wins. A new module that matches none
# fails `test_every_module_has_a_layer`, so its place is decided, not guessed.
LAYERS = {
    "tunelab.config": 0,
    "tunelab.config_values": 0,
    "tunelab.presets": 0,
    "tunelab.metric_names": 0,
    "tunelab.data": 1,
    "tunelab.model": 1,
    "tunelab.losses": 1,
    "tunelab.metrics": 1,
    "tunelab.early_stop": 1,
    "tunelab.inference": 1,
    "tunelab.receptive_field": 1,
    "tunelab.device": 2,
    "tunelab.epoch_report": 2,
    "tunelab.checkpoint": 2,
    "tunelab.train": 2,
    "tunelab.space": 3,
    "tunelab.results": 3,
    "tunelab.summary": 3,
    "tunelab.resume": 3,
    "tunelab.stopper": 3,
    "tunelab.trainable": 3,
    "tunelab.collect": 3,
    "tunelab.tracking": 3,
    "tunelab.searcher": 3,
    "tunelab.runner": 3,
    "tunelab.sweep": 4,
    "tunelab.predict": 4,
    "analysis": 5,
}
# the package itself (its __init__ is a docstring; `from tunelab import x` names it), matched
# exactly so that it does not place every tunelab module
EXACT = {"tunelab": 0}
LAYER_NAMES = (
    "config",
    "data / model / losses / metrics / rule",
    "training loop",
    "Ray wiring and tracking",
    "CLIs",
    "analysis",
)


def modules(package: str) -> dict[str, Path]:
    """Every module of a package found on disk: dotted name -> file."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(path: Path, name: str) -> set[str]:
    """The absolute names a module imports, at any depth, relative imports resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            # `from tunelab import checkpoint` imports the module tunelab.checkpoint
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def layer_of(module: str) -> int | None:
    if module in EXACT:
        return EXACT[module]
    matches = [p for p in LAYERS if module == p or module.startswith(f"{p}.")]
    return LAYERS[max(matches, key=len)] if matches else None


ALL_MODULES = {name: path for package in PACKAGES for name, path in modules(package).items()}


def test_the_scan_sees_every_package_and_a_known_import():
    assert {"tunelab.runner", "tunelab.tracking.callback", "analysis.report"} <= set(ALL_MODULES)
    runner = imports_of(ALL_MODULES["tunelab.runner"], "tunelab.runner")
    assert "ray" in runner and "tunelab.collect" in runner


def test_imports_inside_functions_and_relative_imports_are_seen(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text(
        "def late():\n    import analysis.report\n\nfrom . import sibling\nfrom .. import top\n"
    )
    found = imports_of(source, "tunelab.tracking.mod")
    assert {"analysis.report", "tunelab.tracking.sibling", "tunelab.top"} <= found


@pytest.mark.parametrize("name", sorted(n for n in ALL_MODULES if n.startswith("tunelab")))
def test_tunelab_never_imports_analysis(name):
    imported = imports_of(ALL_MODULES[name], name)
    upward = sorted(m for m in imported if m == "analysis" or m.startswith("analysis."))
    assert not upward, f"{ALL_MODULES[name]} imports {upward}: tunelab never imports analysis"


@pytest.mark.parametrize("name", sorted(n for n in ALL_MODULES if n.startswith("analysis")))
def test_analysis_never_imports_ray(name):
    imported = imports_of(ALL_MODULES[name], name)
    ray = sorted(m for m in imported if m == "ray" or m.startswith("ray."))
    assert not ray, f"{ALL_MODULES[name]} imports {ray}: analysis reads results without Ray"


def test_every_module_has_a_layer():
    unplaced = sorted(name for name in ALL_MODULES if layer_of(name) is None)
    assert not unplaced, f"place these modules in a layer of tests/test_layers.py: {unplaced}"


@pytest.mark.parametrize("name", sorted(ALL_MODULES))
def test_no_import_goes_up_a_layer(name):
    own = layer_of(name)
    assert own is not None
    upward = []
    for module in sorted(imports_of(ALL_MODULES[name], name)):
        layer = layer_of(module)
        if layer is not None and layer > own:
            upward.append(f"{module} ({LAYER_NAMES[layer]})")
    assert not upward, f"{name} ({LAYER_NAMES[own]}) imports a higher layer: {upward}"
