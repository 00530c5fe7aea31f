"""Expert files: the trajectories MTT and IADD match, one network's parameters at every epoch.

Each expert is one file, ``expert_NNNN.pt``: ``{"format", "model", "model_args", "names", "shapes",
"trajectory": float32 [epochs + 1, P] (flattened parameters at init and after every epoch), "seed",
"config", "normalization": {"name", "mean", "std"} of its inputs (absent before issue 29: ImageNet's)}``,
written through a temporary name. A folder of them may be remote (``s3://…``): readers download the files once
into a local mirror. When the experts were trained on ZCA-whitened images the transform is ``zca.pt`` beside
them (``raydd.data.zca.experts_zca``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydd.io.storage import fetch, is_remote, list_files
from raydd.io.torch_files import load_torch_file

__all__ = ["FORMAT", "expert_files", "expert_name", "finished_experts", "flat_params", "load_expert", "param_layout",
           "save_expert"]

FORMAT = "raydd.expert.v1"


def param_layout(model: nn.Module) -> tuple[list[str], list[tuple[int, ...]]]:
    """Names and shapes of the trainable parameters, in the order trajectories flatten them."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [tuple(p.shape) for _, p in named]


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters() if p.requires_grad]).cpu()


def save_expert(path: Path, *, trajectory: torch.Tensor, model_name: str, model_args: dict[str, Any],
                names: list[str], shapes: list[tuple[int, ...]], seed: int, config: dict[str, Any],
                normalization: dict[str, Any] | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, "model": model_name, "model_args": model_args, "names": names,
                "shapes": shapes, "trajectory": trajectory.to(torch.float32), "seed": seed, "config": config,
                "normalization": normalization}, tmp)
    os.replace(tmp, path)


def load_expert(path: str | Path) -> dict[str, Any]:
    state = load_torch_file(path)
    if state.get("format") != FORMAT:
        raise ValueError(f"{path} is not a raydd expert file")
    return state


def expert_name(i: int) -> str:
    return f"expert_{i:04d}.pt"


def finished_experts(folder: str) -> set[str]:
    """Names of the expert files already in ``folder`` (local or remote)."""
    if is_remote(folder):
        return set(list_files(folder, "expert_*.pt"))
    return {p.name for p in Path(folder).glob("expert_*.pt")}


def expert_files(folder: str) -> list[Path]:
    """The expert files of ``folder`` as local paths; a remote folder's are downloaded into its mirror once."""
    if is_remote(folder):
        files = [fetch(f"{folder.rstrip('/')}/{name}") for name in sorted(finished_experts(folder))]
    else:
        files = sorted(Path(folder).expanduser().glob("expert_*.pt"))
    if not files:
        raise FileNotFoundError(f"no expert files (expert_*.pt) in {folder}; run `raydd experts` first")
    return files
