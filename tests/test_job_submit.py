"""The cluster path, for real: a local Ray head started with `ray start`, the ImageNet example submitted to it with
`ray job submit --working-dir .`, its outputs checked, and the head stopped whatever happens."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from raydd.demo import sample_path
from raydd.io import DistilledSet
from tests.conftest import _free_port, make_image_folder

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PORT_FLAGS = ["--port", "--dashboard-port", "--ray-client-server-port", "--node-manager-port",
              "--object-manager-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
              "--metrics-export-port", "--runtime-env-agent-port"]


def _wait_for(url: str, head: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            pytest.fail(f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (Ray's dashboard may require a token for this route)
        except OSError:
            time.sleep(1)
    pytest.fail(f"the Ray head's dashboard did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A head on free ports in its own temp dir (the session's Ray may be running beside it), in its own
    process group so that stopping it stops every process it started."""
    ports = {flag: str(_free_port()) for flag in PORT_FLAGS}
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    # Ray ≥ 2.59 protects a local head's dashboard with a token: give the head and the CLI the same one.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen(
            [str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--temp-dir", temp,
             "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--disable-usage-stats",
             *[x for flag, port in ports.items() for x in (flag, port)]],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['--dashboard-port']}"
    try:
        _wait_for(f"{address}/api/version", head, log)
        yield address, env
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:  # a graceful stop takes ~30 s here; the group dies with the head's temp dir anyway
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_imagenet_example_submitted_as_a_ray_job(tmp_path, ray_head):
    address, env = ray_head
    data = make_image_folder(tmp_path / "train", CIFAR, 4, size=32)
    out = tmp_path / "rded"
    job = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--",
         "python", "examples/imagenet_rded.py", "--data", str(data), "--out", str(out), "--class-map", "sorted",
         "--observer", f"cifar_resnet20@{sample_path('cifar10_resnet20.th')}", "--ipc", "1", "--factor", "2",
         "--mipc", "4", "--num-crops", "2", "--input-size", "32", "--batch-size", "16"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    output = job.stdout + job.stderr
    assert job.returncode == 0, output[-4000:]
    assert "succeeded" in output.lower(), output[-4000:]
    distilled = DistilledSet(out)
    assert len(distilled) == 10 and distilled.classes == CIFAR
    assert (out / "montage.png").exists() and (out / "scores.parquet").exists()
    assert distilled.stats["candidates"] == 40
