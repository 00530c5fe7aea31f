"""Runs across a three-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head and two worker
nodes, one CPU each), and runs that lose a worker node midway.

Marked ``cluster``: the default test command leaves them out (minutes on 2 cores); ``pytest -m cluster`` runs
them, and CI does.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from raydd.runtime import RunFailedError
from tests.conftest import make_image_folder, save_random_observer

pytestmark = pytest.mark.cluster
CLASSES = ["a", "b", "c"]


class ThreeNodes:
    """The cluster, with a way to lose a worker node that runs a given kind of actor, and to replace it."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        for _ in range(2):
            self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()
        self.removed: list[str] = []

    def restore(self) -> None:
        while len(self.cluster.worker_nodes) < 2:
            self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()

    def lose_node_running(self, actor_class: str, when: Callable[[], bool]) -> threading.Thread:
        """In the background: once ``when()`` holds, remove a worker node that hosts a live ``actor_class``."""
        from ray.util.state import list_actors

        def watch() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if when():
                    nodes = {node.node_id: node for node in self.cluster.worker_nodes}
                    for actor in list_actors(filters=[("class_name", "=", actor_class), ("state", "=", "ALIVE")]):
                        if actor.node_id in nodes:
                            self.removed.append(actor.node_id)
                            self.cluster.remove_node(nodes[actor.node_id])
                            return
                time.sleep(0.1)

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread


@pytest.fixture(scope="module")
def nodes() -> Iterator[ThreeNodes]:
    import ray

    from raydd.runtime import init_ray

    ray.shutdown()  # a run of the whole suite: the session's one-node Ray gives way (these tests run last)
    cluster = ThreeNodes()
    init_ray(address=cluster.cluster.address)
    yield cluster
    ray.shutdown()
    cluster.cluster.shutdown()


@pytest.fixture
def three(nodes: ThreeNodes) -> Iterator[ThreeNodes]:
    nodes.restore()
    nodes.removed.clear()  # the nodes one test removed are not the next test's
    yield nodes
    nodes.restore()


def _registered(run_folder: Path) -> Callable[[], bool]:
    """True once Ray Train's controller has registered a checkpoint of the run (the one a restart resumes)."""
    snapshot = run_folder / "checkpoint_manager_snapshot.json"
    return lambda: snapshot.exists() and "checkpoint_" in snapshot.read_text()


def _same_files(one: Path, other: Path, names: list[str]) -> bool:
    return all((one / n).read_bytes() == (other / n).read_bytes() for n in names)


def test_distill_across_nodes_matches_one_node_and_survives_losing_one(three, tmp_path):
    from raydd.rded import RdedConfig, distill

    data = make_image_folder(tmp_path / "train", CLASSES, 40, size=96)
    observer = save_random_observer(tmp_path / "observer", CLASSES, input_size=64)

    def config(out: str, **kwargs) -> RdedConfig:
        return RdedConfig(data=str(data), observers=[observer], out=str(tmp_path / out),
                          ipc=2, factor=2, mipc=40, num_crops=4, input_size=64, precision="fp32", block_images=6,
                          scores_part_images=6, threads_per_worker=1, **kwargs)

    one = distill(config("one-node", num_workers=1))
    across = distill(config("three-nodes"))  # one actor per node
    files = ["manifest.parquet", "soft_labels.parquet", "scores.parquet", *one.manifest.column("file").to_pylist()]
    assert _same_files(one.path, across.path, files)

    scored = tmp_path / ".lost-node.partial" / "scores"
    three.lose_node_running("MapWorker(MapBatches(cut_crops)->MapBatches(ScoreCrops))",
                            lambda: scored.exists() and any(scored.glob("part-*"))).join(timeout=0.01)
    lost = distill(config("lost-node"))
    assert three.removed, "no node was removed while scoring"
    ids = pq.read_table(lost.path / "scores.parquet")["image_id"].to_pylist()
    assert sorted(ids) == list(range(120))  # every candidate scored exactly once
    assert _same_files(one.path, lost.path, files)


def _train_data(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "train", CLASSES, 40, size=32)


def test_training_restarts_on_the_nodes_left_and_resumes_from_its_checkpoint(three, tmp_path):
    from raydd.train import TrainConfig, fit

    config = TrainConfig(data=str(_train_data(tmp_path)), epochs=12, batch_size=32, num_workers=2,
                         storage_path=str(tmp_path / "runs"), name="restarts", max_failures=1)
    three.lose_node_running("RayTrainWorker", _registered(tmp_path / "runs" / "restarts"))
    result = fit(config)
    assert three.removed and result.metrics["epoch"] == 12 and result.metrics["resumed_from"] >= 1


def test_when_retries_run_out_the_error_names_the_node_and_a_rerun_resumes(three, tmp_path):
    from raydd.train import TrainConfig, fit

    config = TrainConfig(data=str(_train_data(tmp_path)), epochs=12, batch_size=32, num_workers=2,
                         storage_path=str(tmp_path / "runs"), name="stops")
    three.lose_node_running("RayTrainWorker", _registered(tmp_path / "runs" / "stops"))
    with pytest.raises(RunFailedError) as failed:
        fit(config)
    message = str(failed.value)
    assert three.removed[0] in message and "run the same command again to resume" in message
    three.restore()
    result = fit(config)
    assert result.metrics["epoch"] == 12 and result.metrics["resumed_from"] >= 1


def test_experts_keep_finished_experts_through_a_lost_node(three, tmp_path):
    from raydd.trajectories import ExpertsConfig, train_experts

    out = tmp_path / "experts"
    config = ExpertsConfig(data=str(_train_data(tmp_path)), out=str(out), num_experts=6, epochs=4, batch_size=32,
                           num_workers=2, max_failures=1)
    three.lose_node_running("RayTrainWorker", lambda: len(list(out.glob("expert_*.pt"))) >= 2)
    files = train_experts(config)
    assert three.removed and [f.name for f in files] == [f"expert_{i:04d}.pt" for i in range(6)]


def test_matching_restarts_from_its_checkpoint_after_a_lost_node(three, tmp_path):
    from raydd.matching import MatchConfig, match
    from tests.test_matching_ray import _fake_experts

    (tmp_path / "experts").mkdir()
    _fake_experts(tmp_path / "experts", count=2, epochs=3)
    config = MatchConfig(data=str(_train_data(tmp_path)), experts=str(tmp_path / "experts"), out=str(tmp_path / "m"),
                         method="mtt", ipc=2, iterations=40, syn_steps=8, expert_epochs=1, max_start_epoch=2,
                         checkpoint_every=2, num_workers=2, max_failures=1)
    three.lose_node_running("RayTrainWorker", _registered(tmp_path / ".m.partial" / "ray" / "match"))
    distilled = match(config)
    assert three.removed and distilled.stats["iterations"] == 40 and distilled.stats["resumed_from"] >= 2


def test_evaluation_trials_restart_from_their_checkpoints_after_a_lost_node(three, tmp_path):
    from raydd.evaluate import EvalConfig, evaluate

    data = _train_data(tmp_path)
    out = tmp_path / "eval"
    config = EvalConfig(distilled=str(data), val_data=str(data), out=str(out), protocol="mtt", epochs=60,
                        eval_every=2, seeds=[0, 1], max_failures=1)
    trials = tmp_path / ".eval.partial" / "tune" / "trials"
    three.lose_node_running("ImplicitFunc", lambda: trials.exists() and any(trials.glob("*/checkpoint_*")))
    report = evaluate(config)
    assert three.removed and report["sets"]["distilled"]["seeds"] == [0, 1]
    assert json.loads((out / "raydd.json").read_text())["complete"]
