"""The package's layering, read from its imports: features stand on shared primitives, never on each other.

Features are the jobs (``rded``, ``train``, ``trajectories``, ``matching``, ``evaluate``); everything they share
(``data``, ``models``, ``transforms``, ``io``, ``config``, ``scaling``, ``_runtime``) sits below them and imports
no feature. Only the entry points (``cli``, ``demo``, ``raydd/__init__``) may import several features.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "raydd"
FEATURES = {"rded", "train", "trajectories", "matching", "evaluate"}
ENTRY_POINTS = {"cli", "demo", "__init__", "__main__"}


def _top(module: str) -> str | None:
    """``raydd.rded.tasks`` → ``rded``; None for modules outside raydd."""
    parts = module.split(".")
    return parts[1] if parts[0] == "raydd" and len(parts) > 1 else None


def imported_parts(path: Path) -> set[str]:
    """The raydd top-level parts a file imports, at module level or inside functions alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "raydd" else [])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(part for part in map(_top, names) if part is not None)
    return found


def violations(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        part = rel.parts[0].removesuffix(".py")
        if part in ENTRY_POINTS:
            continue
        for target in sorted(imported_parts(path) - {part}):
            if target in FEATURES:
                kind = "feature" if part in FEATURES else "shared module"
                bad.append(f"{rel}: a {kind} imports the feature {target!r}")
    return bad


def test_no_feature_imports_another_and_no_shared_module_imports_a_feature():
    assert violations(PACKAGE) == []


def test_the_check_sees_module_level_and_lazy_imports(tmp_path):
    (tmp_path / "matching").mkdir()
    (tmp_path / "matching" / "match.py").write_text("from raydd.trajectories.experts import x\n")
    (tmp_path / "io").mkdir()
    (tmp_path / "io" / "distilled.py").write_text("def f():\n    import raydd.rded.labels\n")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "ok.py").write_text("from raydd.transforms.grid import grid_cells\nfrom raydd import io\n")
    (tmp_path / "cli.py").write_text("from raydd.rded import distill\nfrom raydd.evaluate import evaluate\n")
    assert violations(tmp_path) == [
        "io/distilled.py: a shared module imports the feature 'rded'",
        "matching/match.py: a feature imports the feature 'trajectories'",
    ]


@pytest.mark.parametrize("part", sorted(FEATURES))
def test_every_feature_is_a_package_here(part):
    assert (PACKAGE / part / "__init__.py").exists()
