"""The example scripts' smoke modes, run as a user would call them (on the session's Ray)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from raydd.io import DistilledSet
from tests.test_matching_ray import _moved_from_their_sources

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as for any imported module: its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cifar10_iadd_example_chains_experts_matching_and_evaluation(tmp_path, ray_session):
    example = _load("cifar10_iadd")
    summary = example.main(example.parse(["--smoke-test", "--out", str(tmp_path)]))
    assert summary["experts"] == 2 and summary["learned_lr"] != 0.01  # alpha moved from its start
    assert set(summary) >= {"distilled", "random"}
    iadd = DistilledSet(tmp_path / "iadd")
    assert len(iadd) == 100  # IPC 10 on the sample's 10 classes
    assert _moved_from_their_sources(iadd) > 90
    assert (tmp_path / "eval" / "report.json").exists()


def test_driver_api_example_runs_rded_mtt_and_iadd(tmp_path, ray_session):
    example = _load("driver_api")
    results = example.main(example.parse(["--smoke-test", "--out", str(tmp_path)]))
    assert set(results) == {"rded", "mtt", "iadd"}
    for name in results:
        assert len(DistilledSet(tmp_path / name)) == 10
        assert (tmp_path / f"eval-{name}" / "curve.png").exists()


@pytest.mark.parametrize("name, message", [
    ("imagenet_rded", "missing required option(s): --data"),
    ("cifar10_iadd", "--data and --val-data are required (or --smoke-test)"),
    ("driver_api", "--data, --val-data and --observer are required (or --smoke-test)"),
])
def test_examples_refuse_to_run_without_data(name, message, tmp_path):
    """Run as a user would, without data: a usage error naming what is missing, before any Ray work."""
    run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--out", str(tmp_path / "out")],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]
    assert not (tmp_path / "out").exists()
