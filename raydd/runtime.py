"""Process set-up shared by every process raydd starts: allocator tuning and Ray start-up.

glibc's default malloc hands large blocks (torch activations) back to the kernel on every free, so a CPU
forward pass pays a page fault per touched page on every batch; on the 2-core machines raydd is developed on
that made a conv net's forward 3x slower. Keeping freed memory in the process removes the tax. One arena
matters as much: Ray Data calls a UDF from a worker thread, and glibc gives each thread its own arena where
these settings do not hold (EfficientNet-Lite0 ran at 34 img/s there against 99 on the main thread).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import time
from typing import Any

__all__ = ["ALLOCATOR_ENV", "RunFailedError", "init_ray", "lost_nodes", "runtime_env", "tune_allocator"]


class RunFailedError(RuntimeError):
    """A Ray run stopped by a failure it could not recover from; its checkpoints are kept, and running the same
    command again resumes from them (the message says where)."""

# Read by glibc when a process starts: no mmap for large blocks, never trim the heap back to the kernel, and
# one arena, so that threads other than the main one allocate from the same never-trimmed heap.
ALLOCATOR_ENV: dict[str, str] = {
    "MALLOC_MMAP_MAX_": "0",
    "MALLOC_TRIM_THRESHOLD_": "100000000000",
    "MALLOC_ARENA_MAX": "1",
}

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_tuned = False


def tune_allocator() -> bool:
    """Apply the allocator settings to the running process (glibc only); returns whether they apply.

    Environment variables only reach processes started later, so the current process (a driver, a Ray
    worker that was started without them) calls ``mallopt`` directly. The one-arena limit only holds for
    arenas not yet created: call this before importing torch (raydd's entry points do); Ray workers get the
    variables at start through ``runtime_env``, which is always in time.
    """
    global _tuned
    if _tuned:
        return True
    for key, value in ALLOCATOR_ENV.items():
        os.environ.setdefault(key, value)
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all([mallopt(_M_MMAP_MAX, 0), mallopt(_M_TRIM_THRESHOLD, 2**31 - 1), mallopt(_M_ARENA_MAX, 1)])
    _tuned = ok
    return ok


def runtime_env(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Ray ``runtime_env`` whose workers start with the allocator settings."""
    env: dict[str, Any] = {"env_vars": dict(ALLOCATOR_ENV)}
    if extra:
        env.update({k: v for k, v in extra.items() if k != "env_vars"})
        env["env_vars"].update(extra.get("env_vars", {}))
    return env


def init_ray(address: str | None = None, num_cpus: int | None = None, **kwargs: Any) -> None:
    """Connect to (or start) Ray once, with workers that use the tuned allocator.

    When Ray is already initialised (a driver script, a test fixture, a submitted job) nothing changes.
    """
    import ray

    tune_allocator()
    # Ray Data lets the actors of a failed run go when their last reference does, and its exception's traceback
    # holds them in a reference cycle: until a garbage collection they keep their CPUs, and the next job of a
    # long-lived driver waits for them. Every raydd job starts here.
    gc.collect()
    if ray.is_initialized():
        return
    ray.init(
        address=address,
        num_cpus=num_cpus,
        runtime_env=runtime_env(kwargs.pop("runtime_env", None)),
        log_to_driver=kwargs.pop("log_to_driver", True),
        **kwargs,
    )


def lost_nodes(since: float, wait: float = 10.0) -> str:
    """The Ray nodes that died after ``since`` (a ``time.time()``), as a paragraph of ``node id (ip): reason``
    lines for a failed run's message (empty when none did), since Ray's own error may only say that a worker
    stopped answering. A worker's death is often noticed before the cluster records its node's, so this waits
    up to ``wait`` seconds for the record."""
    try:
        from ray.util.state import list_nodes
    except ImportError:
        return ""
    deadline = time.monotonic() + wait
    while True:
        try:
            dead = list_nodes(filters=[("state", "=", "DEAD")], detail=True, raise_on_missing_output=False)
        except Exception:  # the state API needs the dashboard; without it there is nothing more to say
            return ""
        lines = [f"  node {n.node_id} ({n.node_ip}): {n.state_message or 'dead'}" for n in dead
                 if (n.end_time_ms or 0) >= since * 1000]
        if lines or time.monotonic() > deadline:
            return "Nodes lost during the run:\n" + "\n".join(lines) + "\n" if lines else ""
        time.sleep(0.5)
