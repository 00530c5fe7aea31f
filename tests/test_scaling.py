"""The one place scaling becomes Ray arguments: actor pools, Tune trials, a failed run's message. Ray's view of
the cluster is replaced, so these run without starting Ray (the Ray Train side: tests/test_gpu_requests.py)."""

import pytest

import raydd.scaling as scaling
from raydd.scaling import Restartable, Scaling, actor_pool, run_failed, trial_resources, trial_threads


@pytest.fixture
def cluster(monkeypatch):
    """Sets what ``ray.cluster_resources()`` reports."""
    import ray

    def set_resources(**resources: float) -> None:
        monkeypatch.setattr(ray, "cluster_resources", lambda: resources)

    return set_resources


def test_cpu_actors_default_to_one_per_cpu_and_share_the_threads(cluster):
    cluster(CPU=8)
    assert actor_pool(Scaling()) == scaling.ActorPool(size=8, num_cpus=1, num_gpus=0.0, threads=1)
    assert actor_pool(Scaling(num_workers=2)) == scaling.ActorPool(size=2, num_cpus=1, num_gpus=0.0, threads=4)
    pool = actor_pool(Scaling(num_workers=2, cpus_per_worker=3, threads_per_worker=5))
    assert (pool.num_cpus, pool.threads) == (3, 5)


def test_gpu_actors_default_to_the_gpus_and_leave_half_the_cpus_to_the_pipeline(cluster):
    cluster(CPU=8, GPU=2)
    assert actor_pool(Scaling(gpus_per_worker=0.5)) == scaling.ActorPool(size=4, num_cpus=1.0, num_gpus=0.5,
                                                                         threads=2)
    assert actor_pool(Scaling(gpus_per_worker=1)).num_cpus == 1.0
    cluster(CPU=2, GPU=2)
    assert actor_pool(Scaling(gpus_per_worker=1)).num_cpus == 0.5  # 2 actors may take 1 of the 2 CPUs
    cluster(CPU=8)
    with pytest.raises(ValueError, match="has 0 GPUs"):
        actor_pool(Scaling(gpus_per_worker=1))
    assert actor_pool(Scaling(gpus_per_worker=1, num_workers=1)).size == 1  # asked for: Ray waits for a GPU


def test_a_trial_reserves_what_a_worker_does():
    assert trial_resources(Scaling()) == {"cpu": 1.0, "gpu": 0.0}
    assert trial_resources(Scaling(cpus_per_worker=2, gpus_per_worker=0.25)) == {"cpu": 2, "gpu": 0.25}
    assert (trial_threads(Scaling()), trial_threads(Scaling(cpus_per_worker=2.5)),
            trial_threads(Scaling(cpus_per_worker=2, threads_per_worker=3))) == (1, 2, 3)


def test_a_failed_run_says_what_failed_where_its_work_is_and_how_to_resume(monkeypatch):
    monkeypatch.setattr(scaling, "lost_nodes", lambda since: "Nodes lost during the run:\n  node n1 (10.0.0.2)\n")
    err = run_failed("trial x (seed 0)", RuntimeError("boom"), Restartable(max_failures=2), started=0.0,
                     kept="Its checkpoints are kept in /runs/x: run the same command again to resume")
    assert str(err) == ("trial x (seed 0) failed after 2 restart(s): boom\nNodes lost during the run:\n"
                        "  node n1 (10.0.0.2)\nIts checkpoints are kept in /runs/x: run the same command again to "
                        "resume (--max-failures N restarts it by itself that many times)")
