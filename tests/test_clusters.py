"""The cluster configs in clusters/: valid for Ray's launcher and KubeRay, and running commands that exist."""

import copy
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.test_examples import _load

CLUSTERS = Path(__file__).resolve().parents[1] / "clusters"


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_yaml_passes_rays_own_schema(name):
    config = yaml.safe_load((CLUSTERS / name).read_text())
    validate_config(prepare_config(copy.deepcopy(config)))  # the checks `ray up` makes before touching a cloud
    workers = config["available_node_types"]["gpu_worker"]
    assert config["head_node_type"] in config["available_node_types"]
    assert workers["max_workers"] >= 1 and config["provider"]["type"] == name.removesuffix(".yaml")
    assert any("pip install" in c and "raydd" in c for c in config["setup_commands"])
    assert config["file_mounts"] == {"/home/ray/raydd": "."}
    for command in config["head_start_ray_commands"] + config["worker_start_ray_commands"]:
        if "ray start" in command:
            assert "MALLOC_ARENA_MAX=1" in command  # every worker process starts with the tuned allocator

    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"]["node_typo"] = {}
    with pytest.raises(jsonschema.ValidationError, match="node_typo"):
        validate_config(prepare_config(broken))


def test_kuberay_rayjob_has_the_required_keys_and_a_valid_entrypoint():
    job = yaml.safe_load((CLUSTERS / "kuberay-rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    head = cluster["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict) and head["template"]["spec"]["containers"][0]["image"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and isinstance(group["rayStartParams"], dict)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] and container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"]["MALLOC_ARENA_MAX"] == "1"

    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["python", "/opt/raydd/examples/imagenet_rded.py"]
    args = _load("imagenet_rded").get_parser().parse_args(argv[2:])  # the example accepts every flag
    assert args.data.startswith("s3://") and args.out.startswith("s3://") and args.gpus_per_worker == 1
    # The image holds this checkout at the entrypoint's path, installed, with the tuned allocator.
    lines = [line.split() for line in (CLUSTERS / "Dockerfile").read_text().splitlines() if line and line[0] != "#"]
    assert ["COPY", "--chown=ray:users", ".", "/opt/raydd"] in lines
    assert any(words[:2] == ["RUN", "pip"] and words[-1] == "/opt/raydd" for words in lines)
    assert any(words[0] == "ENV" and "MALLOC_ARENA_MAX=1" in words for words in lines)
    assert (CLUSTERS.parent / argv[1].removeprefix("/opt/raydd/")).exists()
