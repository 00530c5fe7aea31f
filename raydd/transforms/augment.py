"""Training augmentations as pure torch functions on float batches ``[N, C, H, W]``, for every job.

Classifier training (observers): a random crop of the padded image and a flip. RDED's student protocol: strip
shuffling → random-resized crop (scale 1/factor..1) → flip, per sample; CutMix or Mixup per batch. MTT's experts,
matching and students: differentiable Siamese augmentation (DSA), one family per batch among colour, crop, cutout,
flip, scale and rotate, with per-sample parameters.

Every random number comes from the caller's seeded generator on the host, so a run draws the same augmentations
on a CPU and a GPU; the drawn parameters reach the batch's device by non-blocking copies, which queue behind
the GPU's work instead of waiting for it (a blocking copy synchronises the stream: a host round-trip a step).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from raydd.transforms.grid import grid_spans

__all__ = ["cutmix", "dsa", "hflip", "mixup", "random_crop_flip", "random_resized_crop", "resized_boxes",
           "shuffle_strips"]


def shuffle_strips(x: torch.Tensor, factor: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample, permute the ``factor`` column strips of the stitched grid, then its row strips.

    The permutations are drawn per sample (columns, then rows) on the generator's device; the pixels move in two
    gathers over the whole batch, with no per-sample step on ``x``'s device.
    """
    if factor <= 1:
        return x
    n, h, w = len(x), x.shape[-2], x.shape[-1]

    def pixel_order(spans: list[tuple[int, int]], orders: torch.Tensor) -> torch.Tensor:
        # Per sample, the source pixel of every output position along one axis, the strips laid in drawn order:
        # position p falls in output strip k (the last that starts at or before p) and reads strip order[k].
        starts, lengths = torch.tensor(spans).T
        laid = torch.cumsum(lengths[orders], 1) - lengths[orders]  # where each drawn strip starts in the output
        p = torch.arange(int(lengths.sum()))
        k = (laid[:, :, None] <= p).sum(1) - 1
        return starts[orders].gather(1, k) + p - laid.gather(1, k)

    draws = [torch.randperm(factor, generator=generator) for _ in range(2 * n)]
    cols = pixel_order(grid_spans(w, factor), torch.stack(draws[0::2]).cpu()).to(x.device, non_blocking=True)
    rows = pixel_order(grid_spans(h, factor), torch.stack(draws[1::2]).cpu()).to(x.device, non_blocking=True)
    out = x.gather(-1, cols[:, None, None, :].expand(n, x.shape[1], h, w))
    return out.gather(-2, rows[:, None, :, None].expand(n, x.shape[1], h, w))


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], generator: torch.Generator | None = None,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Per sample, torchvision's RandomResizedCrop box (ten tries, else the whole image), resampled to the
    input size as torchvision resamples it (bilinear, sampling only inside the box)."""
    n, _, h, w = x.shape
    tries = 10
    area = torch.empty(n, tries).uniform_(scale[0], scale[1], generator=generator) * h * w
    log_r = torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    cw = torch.sqrt(area * torch.exp(log_r)).round()
    ch = torch.sqrt(area / torch.exp(log_r)).round()
    ok = (cw <= w) & (ch <= h) & (cw > 0) & (ch > 0)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))
    idx = first.clamp(min=0)
    cw = torch.where(first >= 0, cw[torch.arange(n), idx], torch.full((n,), float(w)))
    ch = torch.where(first >= 0, ch[torch.arange(n), idx], torch.full((n,), float(h)))
    left = (torch.rand(n, generator=generator) * (w - cw + 1)).floor()
    top = (torch.rand(n, generator=generator) * (h - ch + 1)).floor()
    return resized_boxes(x, top, left, ch, cw)


def resized_boxes(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, height: torch.Tensor,
                  width: torch.Tensor) -> torch.Tensor:
    """Each sample's box (pixels, on the host) resized bilinearly to the full input size, all in one
    ``grid_sample``: source positions are clamped into the box, as a resize of the cropped image clamps them, so
    no pixel outside the box (or zero padding at the image's edge) leaks in."""
    n, _, h, w = x.shape

    def axis(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
        # align_corners=False: output pixel i reads source (i + ½)·length/size − ½ of the box, clamped into it,
        # then written in grid_sample's coordinates, where −1 and 1 are the image's outer edges.
        src = (torch.arange(size) + 0.5) * (length[:, None] / size) - 0.5
        src = start[:, None] + torch.minimum(src.clamp(min=0), length[:, None] - 1)
        return (2 * src + 1) / size - 1

    gx, gy = axis(left, width, w), axis(top, height, h)
    grid = torch.stack([gx[:, None, :].expand(n, h, w), gy[:, :, None].expand(n, h, w)], dim=-1)
    grid = grid.to(x.device, x.dtype, non_blocking=True)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def hflip(x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5) -> torch.Tensor:
    flip = (torch.rand(len(x), generator=generator) < p).to(x.device, non_blocking=True).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def cutmix(x: torch.Tensor, generator: torch.Generator | None = None, alpha: float = 1.0
           ) -> tuple[torch.Tensor, torch.Tensor, float, tuple[int, int, int, int]]:
    """Paste a box of a shuffled batch into each image: λ ~ Beta(α, α), box side √(1 − λ) of the image's,
    centred uniformly and clipped at the border. Returns (mixed, permutation, effective λ, box
    (top, left, bottom, right)); effective λ = 1 − box area / image area."""
    n, _, h, w = x.shape
    lam = _beta(alpha, generator)
    perm = torch.randperm(n, generator=generator)
    cut = math.sqrt(1.0 - lam)
    cy, cx = (int(torch.randint(0, h, (1,), generator=generator)), int(torch.randint(0, w, (1,), generator=generator)))
    top, bottom = max(cy - int(h * cut) // 2, 0), min(cy + int(h * cut) // 2, h)
    left, right = max(cx - int(w * cut) // 2, 0), min(cx + int(w * cut) // 2, w)
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x[perm.to(x.device, non_blocking=True)][:, :, top:bottom, left:right]
    effective = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, perm, effective, (top, left, bottom, right)


def mixup(x: torch.Tensor, generator: torch.Generator | None = None, alpha: float = 1.0
          ) -> tuple[torch.Tensor, torch.Tensor, float]:
    lam = _beta(alpha, generator)
    perm = torch.randperm(len(x), generator=generator)
    return lam * x + (1 - lam) * x[perm.to(x.device, non_blocking=True)], perm, lam


def _beta(alpha: float, generator: torch.Generator | None) -> float:
    """λ ~ Beta(α, α), drawn from the same seeded stream as everything else (torch's Beta takes no generator)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def dsa(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable Siamese augmentation as MTT evaluates with it: one family per batch, chosen uniformly
    among colour (brightness, saturation, contrast), crop (translate ≤ 1/8), cutout (½ side), flip,
    scale (×1/1.2–1.2) and rotate (±15°)."""
    n = len(x)
    family = int(torch.randint(0, 6, (1,), generator=generator))
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(x.device, non_blocking=True)  # noqa: E731
    if family == 0:
        x = x + (rand(n, 1, 1, 1) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean
    if family == 1:
        shift = (rand(n, 2) - 0.5) * 2 * 0.125 * 2
        theta = torch.zeros(n, 2, 3, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, :, 2] = shift
        return _affine(x, theta)
    if family == 2:
        h, w = x.shape[-2:]
        ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        cy = (rand(n) * (h + (1 - ch % 2))).long().view(n, 1, 1)
        cx = (rand(n) * (w + (1 - cw % 2))).long().view(n, 1, 1)
        ys = torch.arange(h, device=x.device).view(1, h, 1)
        xs = torch.arange(w, device=x.device).view(1, 1, w)
        inside = ((ys - cy).abs() <= ch // 2) & ((xs - cx).abs() <= cw // 2)
        return x * (~inside).unsqueeze(1).to(x.dtype)
    if family == 3:
        return hflip(x, generator)
    theta = torch.zeros(n, 2, 3, device=x.device)
    if family == 4:
        theta[:, 0, 0] = rand(n) * (1.2 - 1 / 1.2) + 1 / 1.2
        theta[:, 1, 1] = rand(n) * (1.2 - 1 / 1.2) + 1 / 1.2
    else:
        angle = (rand(n) - 0.5) * 2 * 15 / 180 * math.pi
        theta[:, 0, 0], theta[:, 0, 1] = torch.cos(angle), torch.sin(-angle)
        theta[:, 1, 0], theta[:, 1, 1] = torch.sin(angle), torch.cos(angle)
    return _affine(x, theta)


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per sample: a random crop of the zero-padded image (same size) and a horizontal flip with p = 0.5."""
    n, _, h, w = x.shape
    if padding > 0:
        padded = F.pad(x, (padding,) * 4)
        dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
        rows = (dy.view(n, 1) + torch.arange(h)).to(x.device)
        cols = (dx.view(n, 1) + torch.arange(w)).to(x.device)
        index = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        channel = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
        x = padded[index, channel, rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
