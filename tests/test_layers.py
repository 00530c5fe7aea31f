"""The package's layering, read from its imports: each layer stands only on the layers below it.

From the bottom: process set-up and configs (``runtime``, ``config``); files (``io``); data, models and
transforms, which may use each other; ``scaling`` (resources into Ray calls); the features, the jobs (``rded``,
``train``, ``trajectories``, ``matching``, ``evaluate``), which never import each other; the entry points
(``cli``, ``demo``, ``raydd/__init__``) on top, with the examples and benchmarks. A name that starts with ``_``
is its package's own: no other package imports it, benchmarks and examples included.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "raydd"
FEATURES = {"rded", "train", "trajectories", "matching", "evaluate"}
LAYERS = [{"runtime", "config"}, {"io"}, {"data", "models", "transforms"}, {"scaling"}, FEATURES,
          {"cli", "demo", "__init__", "__main__"}]
RANK = {part: i for i, layer in enumerate(LAYERS) for part in layer}
OUTSIDE = len(LAYERS)  # examples and benchmarks: above everything


def imports(path: Path) -> list[tuple[str, str]]:
    """(raydd module, imported name or "") for every raydd import of a file, module level or lazy."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "raydd":
            found += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names if a.name.split(".")[0] == "raydd"]
    return found


def _target(module: str, name: str) -> tuple[str | None, list[str]]:
    """(top-level part, the dotted path below ``raydd``) of an import: ``from raydd import io`` is ``io``."""
    parts = module.split(".")[1:] + ([name] if module == "raydd" and name else [])
    return (parts[0] if parts else None), parts + ([name] if module != "raydd" and name else [])


def violations(root: Path, part_of: dict[Path, str] | None = None) -> list[str]:
    """Imports that point down the wrong way or reach another package's private names. ``part_of`` names the
    part of files outside ``root``'s packages (examples, benchmarks)."""
    files = {path: path.relative_to(root).parts[0].removesuffix(".py") for path in sorted(root.rglob("*.py"))}
    files.update(part_of or {})
    bad = []
    for path, part in files.items():
        rank = RANK.get(part, OUTSIDE)
        rel = path.relative_to(path.parents[1]) if part_of and path in part_of else path.relative_to(root)
        for module, name in imports(path):
            target, dotted = _target(module, name)
            if target is None or target == part:
                continue
            private = [p for p in dotted if p.startswith("_") and not p.startswith("__")]
            if private:
                bad.append(f"{rel}: imports {'.'.join(['raydd', *dotted])}, private to raydd.{target}")
            if target not in RANK:
                continue
            if target in FEATURES and part in FEATURES:
                bad.append(f"{rel}: a feature imports the feature {target!r}")
            elif RANK[target] > rank:
                bad.append(f"{rel}: {part!r} imports {target!r}, a layer above it")
    return sorted(set(bad))


def test_every_import_points_down_the_layers_and_no_private_name_crosses_a_package():
    outside = {path: "outside" for folder in ("examples", "benchmarks") for path in (ROOT / folder).glob("*.py")}
    assert violations(PACKAGE, outside) == []


def test_the_check_sees_each_kind_of_wrong_import(tmp_path):
    (tmp_path / "matching").mkdir()
    (tmp_path / "matching" / "match.py").write_text("from raydd.trajectories.experts import x\n")
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "distilled.py").write_text("def f():\n    import raydd.models.logits\n")
    (tmp_path / "io" / "experts.py").write_text("from raydd.models._weights import load\n")
    (tmp_path / "config.py").write_text("from raydd import scaling\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ok.py").write_text("from raydd.transforms.grid import grid_cells\nfrom raydd import io\n"
                                               "from raydd.models._weights import load\n")
    (tmp_path / "cli.py").write_text("from raydd.rded import distill\nfrom raydd.evaluate import evaluate\n")
    bench = tmp_path / "benchmarks" / "b.py"
    bench.parent.mkdir()
    bench.write_text("from raydd.rded.pipeline import _plan\nfrom raydd.rded import distill\n")
    assert violations(tmp_path, {bench: "outside"}) == sorted([
        "config.py: 'config' imports 'scaling', a layer above it",
        "io/distilled.py: 'io' imports 'models', a layer above it",
        "io/experts.py: 'io' imports 'models', a layer above it",
        "io/experts.py: imports raydd.models._weights.load, private to raydd.models",
        "matching/match.py: a feature imports the feature 'trajectories'",
        "benchmarks/b.py: imports raydd.rded.pipeline._plan, private to raydd.rded",
    ])


@pytest.mark.parametrize("part", sorted(FEATURES))
def test_every_feature_is_a_package_here(part):
    assert (PACKAGE / part / "__init__.py").exists()
