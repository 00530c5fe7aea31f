"""RDED's stages as pure functions, without Ray."""

import io
import itertools

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from raydd.io.soft_labels import dense_logits, tail_stats, topk_logits
from raydd.models.logits import in_fixed_batches, patch_views
from raydd.rded import RdedConfig
from raydd.rded.scoring import pad_to_canvas, realism_scores, score_crops
from raydd.rded.selection import best_crops, combine_topk, in_doubt, partial_topk
from raydd.transforms.crops import crop_rng, cut_box, cut_boxes, draft_size, sample_boxes
from raydd.transforms.grid import grid_cells, patch_ranks, stitch


def test_boxes_are_square_inside_and_cover_the_scale_range():
    boxes = sample_boxes(120, 80, 2000, np.random.default_rng(0), (0.08, 1.0))
    left, top, side = boxes.T
    assert (left >= 0).all() and (top >= 0).all() and (left + side <= 120).all() and (top + side <= 80).all()
    area = side.astype(float) ** 2 / (120 * 80)
    assert area.min() >= 0.075 and area.max() <= 80 * 80 / (120 * 80) + 1e-9
    # Large draws that cannot fit as squares fall back to the centred square of the shorter side.
    assert ((side == 80) & (left == 20) & (top == 0)).any()
    # Draws that cannot fit as squares (over 2/3 of this image) are drawn again, so the area fraction is uniform on
    # (0.08, 2/3): a sampler that ignored the lower bound, or the retries, would shift these shares.
    for q in (0.2, 0.31, 0.5):
        assert float((area < q).mean()) == pytest.approx((q - 0.08) / (2 / 3 - 0.08), abs=0.03)


def test_boxes_depend_only_on_seed_and_name():
    a = sample_boxes(64, 64, 5, crop_rng(7, "cat/1.png"))
    assert np.array_equal(a, sample_boxes(64, 64, 5, crop_rng(7, "cat/1.png")))
    assert not np.array_equal(a, sample_boxes(64, 64, 5, crop_rng(7, "cat/2.png")))
    assert not np.array_equal(a, sample_boxes(64, 64, 5, crop_rng(8, "cat/1.png")))


def test_cut_box_resizes_the_region_and_rescales_draft_boxes():
    pixels = np.zeros((40, 40, 3), np.uint8)
    pixels[10:30, 10:30] = 200
    image = Image.fromarray(pixels)
    assert (cut_box(image, (10, 10, 20), 8) == 200).all()
    half = image.resize((20, 20))
    assert (cut_box(half, (10, 10, 20), 8, original_size=(40, 40))[2:6, 2:6] == 200).all()
    assert cut_box(image, (0, 0, 40), (5, 4)).shape == (4, 5, 3)


def test_draft_size_only_when_every_box_is_twice_the_output():
    boxes = np.array([[0, 0, 200], [0, 0, 100]])
    assert draft_size((400, 300), boxes, 50) == (200, 150)
    assert draft_size((400, 300), boxes, 60) is None


def test_grid_cells_give_the_first_rows_the_extra_pixels():
    cells = grid_cells(7, 2)
    assert cells == [(0, 0, 4, 4), (0, 4, 4, 3), (4, 0, 3, 4), (4, 4, 3, 3)]
    assert grid_cells(32, 1) == [(0, 0, 32, 32)]


def test_patch_order_mixes_ranks():
    assert patch_ranks(0, 10, 2) == [0, 10, 20, 30]
    assert patch_ranks(3, 10, 2) == [3, 13, 23, 33]


def test_stitch_places_patches_row_major():
    patches = [np.full((h, w, 3), k, np.uint8) for k, (_, _, h, w) in enumerate(grid_cells(5, 2))]
    canvas = stitch(patches, 5, 2)
    assert canvas[0, 0, 0] == 0 and canvas[0, 4, 0] == 1 and canvas[4, 0, 0] == 2 and canvas[4, 4, 0] == 3
    with pytest.raises(ValueError, match="need 4 patches"):
        stitch(patches[:3], 5, 2)


def test_pad_centres_the_crop_on_zeros():
    x = torch.ones(1, 3, 2, 2)
    out = pad_to_canvas(x, 6)
    assert out.shape == (1, 3, 6, 6) and out.sum() == 12 and out[0, 0, 2:4, 2:4].eq(1).all()
    assert pad_to_canvas(x, 2) is x


def test_realism_score_is_minus_log_softmax_of_the_true_class():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    expected = [-(2 - np.log(np.exp(2) + 1 + np.exp(-1))), np.log(3)]
    assert torch.allclose(realism_scores(logits, torch.tensor([0, 2])), torch.tensor(expected, dtype=torch.float32))


def test_best_crop_per_image_ignores_failed_images():
    index, score = best_crops(np.array([[3.0, 1.0, 2.0], [np.nan] * 3], np.float32))
    assert index.tolist() == [1, -1] and score[0] == 1.0 and np.isinf(score[1])


def test_partial_topk_combined_equals_the_global_topk():
    rng = np.random.default_rng(0)
    n = 500
    table = pa.table({"class_index": rng.integers(0, 7, n).astype(np.int32), "image_id": np.arange(n),
                      "score": rng.choice([0.5, 1.0, 1.5, np.inf], n)})
    full = partial_topk(table, 12)
    cuts = [0, 37, 38, 200, 411, n]
    merged = combine_topk([partial_topk(table.slice(a, b - a), 12) for a, b in itertools.pairwise(cuts)], 12)
    assert merged.to_pydict() == full.to_pydict()
    # Reference: sort each class by (score, id), keep 12 finite ones.
    for c in range(7):
        columns = table.to_pydict().values()
        rows = sorted((s, i) for cl, i, s in zip(*columns, strict=True) if cl == c and np.isfinite(s))[:12]
        got = full.filter(pa.compute.equal(full["class_index"], c))
        assert got["image_id"].to_pylist() == [i for _, i in rows]


def test_soft_label_topk_round_trip():
    logits = torch.tensor([[1.0, 5.0, 3.0, -2.0]])
    idx, val = topk_logits(logits, 2)
    assert idx.tolist() == [[1, 2]] and val.dtype == np.float16
    dense = dense_logits(idx, val, 4)
    assert dense[0, 1] == 5 and dense[0, 2] == 3 and dense[0, 0] == dense[0, 3] == -7
    assert torch.equal(dense_logits(*topk_logits(logits, 4), 4), logits)


def test_stored_top_k_keeps_the_tempered_distribution_of_1000_classes():
    """Issue 29: at T = 20 a 1,000-class teacher's tempered label is nearly flat (the top 10 hold a few per cent),
    so how the classes outside a stored top-10 are filled decides what the label says of the top 10. Filled from
    the stored mean and std of the rest, each top-10 probability is the teacher's to within 1 %; filled at
    "smallest stored logit − 10" the rest lost mass and the top 10 gained a quarter to a third."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 1000, generator=g) * 2.0
    logits[torch.arange(64), torch.randint(0, 1000, (64,), generator=g)] += 12.0  # a confident top class
    full = F.softmax(logits / 20, dim=1)
    idx, val = topk_logits(logits, 10)
    top = torch.from_numpy(idx).long()

    def top_error(dense: torch.Tensor) -> float:
        stored, true = F.softmax(dense / 20, dim=1).gather(1, top), full.gather(1, top)
        return float(((stored - true).abs() / true).max())

    assert top_error(dense_logits(idx, val, 1000, tail=tail_stats(logits, 10), temperature=20)) < 0.01
    assert top_error(dense_logits(idx, val, 1000)) > 0.2
    rest = logits.sort(1, descending=True).values[:, 10:]
    expected = torch.stack([rest.mean(1), rest.std(1, correction=0)], 1).numpy()
    assert np.allclose(tail_stats(logits, 10), expected, atol=1e-5)


def test_patch_views_cut_every_cell():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    images[:, :, 4:, 4:] = 255
    views = patch_views(images, 2)
    assert views.shape == (8, 3, 8, 8)
    assert views[3].eq(255).all() and views[0].eq(0).all()


def test_config_refuses_more_patches_than_candidates():
    with pytest.raises(ValueError, match="ipc \\* factor\\^2 = 40 .* mipc = 30"):
        RdedConfig(data="d", out="o", observers=["x"], ipc=10, factor=2, mipc=30)
    with pytest.raises(ValueError, match="at least one observer"):
        RdedConfig(data="d", out="o", observers=[])


def test_fp32_refinement_applies_to_reduced_precision_only():
    base = dict(data="d", out="o", observers=["x"], ipc=10, factor=2)
    assert RdedConfig(**base).refine_count("fp32") == 0
    assert RdedConfig(**base).refine_count("tf32") == 0
    assert RdedConfig(**base).refine_count("bf16") == 40 // 8 + 2
    assert RdedConfig(**base, refine_margin=0).refine_count("bf16") == 0
    assert RdedConfig(**base, refine_margin=7).refine_count("fp16") == 7
    assert RdedConfig(**base, precision="bf16").scoring_hash() == RdedConfig(**base, precision="bf16",
                                                                            refine_margin=3).scoring_hash()


def test_scoring_precision_auto_is_tf32_on_gpu_and_native_bf16_only_on_cpu(monkeypatch):
    import raydd.models.precision as precision

    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: True)
    assert precision.resolve_scoring_precision("auto", "cuda") == "tf32"
    assert precision.resolve_scoring_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: False)
    assert precision.resolve_scoring_precision("auto", "cpu") == "fp32"
    assert precision.resolve_scoring_precision("tf32", "cpu") == "fp32"  # no TF32 on a CPU
    assert precision.resolve_scoring_precision("bf16", "cpu") == "bf16"  # asked for: given
    assert precision.autocast_dtype("tf32", "cuda") is None and precision.autocast_dtype("bf16", "cpu") is not None


@pytest.mark.parametrize("env, native", [
    ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, False),
    ({"ATEN_CPU_CAPABILITY": "avx2"}, False),
    ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"}, True),
    ({}, True),
])
def test_native_bf16_needs_the_instructions_and_no_isa_cap(monkeypatch, env, native):
    import raydd.models.precision as precision

    for key in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": True, "amx_bf16": False},
                        raising=False)
    precision.native_cpu_bf16.cache_clear()
    try:
        assert precision.native_cpu_bf16() is native
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True}, raising=False)
        precision.native_cpu_bf16.cache_clear()
        assert precision.native_cpu_bf16() is False  # AVX2 only: never native
    finally:
        precision.native_cpu_bf16.cache_clear()


def test_decode_setting_picks_the_actor_on_gpus_only():
    base = dict(data="d", out="o", observers=["x"], ipc=1, factor=1, mipc=4)
    assert not RdedConfig(**base).decode_on_actor
    assert RdedConfig(**base, gpus_per_worker=0.25).decode_on_actor
    assert not RdedConfig(**base, gpus_per_worker=1, decode="tasks").decode_on_actor
    assert RdedConfig(**base, decode="actor").decode_on_actor
    with pytest.raises(ValueError, match="decode must be one of"):
        RdedConfig(**base, decode="gpu")


@pytest.mark.parametrize("model, size", [("convnet3", 32), ("cifar_resnet20", 32), ("resnet18", 64)])
def test_a_crops_score_does_not_depend_on_its_batch_neighbours(model, size):
    """Ray may batch a crop with any others (GPU actors take bundles of blocks): with forwards of one fixed
    shape its score must come out bit for bit the same."""
    from raydd.models import get_entry, get_model
    from raydd.models.observer import Observer

    torch.manual_seed(0)
    kwargs = {"num_classes": 10, **({"input_size": size} if model.startswith("convnet") else {})}
    entry = get_entry(model)
    observer = Observer(get_model(model, **kwargs), normalization=entry.normalization, input_size=size,
                        num_outputs=10, spec=model)
    crops = torch.randint(0, 256, (13, 3, size // 2, size // 2), dtype=torch.uint8)
    labels = torch.arange(13) % 10

    def scores(order):
        return score_crops([observer], crops[order], labels[order], input_size=size, batch_size=8)

    first = scores(torch.arange(13))
    shuffled = torch.tensor([12, 3, 7, 0, 5, 9, 1, 11, 2, 8, 4, 10, 6])
    again = scores(shuffled)
    assert torch.equal(again, first[shuffled])  # every crop in another batch, at another position


def test_every_forward_has_the_same_shape():
    """CPU kernels here happen to give the same bits at any batch size; GPU kernels are chosen by shape, so the
    shape itself is what must not change."""
    seen = []

    def forward(x):
        seen.append(tuple(x.shape))
        return x * 2

    out = in_fixed_batches(forward, torch.arange(10.0).view(5, 2), 3)
    assert seen == [(3, 2), (3, 2)] and torch.equal(out, torch.arange(10.0).view(5, 2) * 2)


def _jpeg(pixels: np.ndarray, mode: str = "RGB", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def test_tensor_crops_match_pillow_crops_to_a_grey_level():
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:75, 0:100]
    pixels = np.stack([127 + 100 * np.sin(xx / 9 + c) * np.cos(yy / 7 - c) for c in range(3)], -1)
    pixels = (pixels + rng.normal(0, 15, pixels.shape)).clip(0, 255).astype(np.uint8)
    image = Image.open(io.BytesIO(_jpeg(pixels)))
    image.load()
    boxes = sample_boxes(100, 75, 6, crop_rng(3, "x.jpg"))
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    ours = cut_boxes(tensor, boxes, [(20, 20)] * 5 + [(21, 20)])
    for box, crop, size in zip(boxes, ours, [(20, 20)] * 5 + [(21, 20)], strict=True):
        reference = cut_box(image, box, size).astype(int)
        got = crop.round().clamp(0, 255).permute(1, 2, 0).numpy().astype(int)
        assert got.shape == reference.shape and np.abs(got - reference).max() <= 1


def test_tensor_crops_take_the_box_they_are_given():
    pixels = torch.zeros(3, 40, 60, dtype=torch.uint8)
    pixels[:, 10:30, 30:50] = 200
    inside, outside = cut_boxes(pixels, np.array([[30, 10, 20], [0, 0, 10]]), [(8, 8), (8, 8)])
    assert inside.round().eq(200).all() and outside.round().eq(0).all()


def test_images_in_doubt_are_those_near_the_cut_off_or_with_a_close_second_crop():
    crops = np.array([[0.10, 0.105], [0.20, 0.90], [0.21, 0.90], [0.30, 0.95], [2.00, 2.01], [np.nan, np.nan]])
    # One class, 2 selected: 0.20 is the last in, 0.21 the first out. With 10 % of error on each score:
    doubt = in_doubt(np.zeros(6, int), crops, per_class=2, gap=0.1)
    # 0: selected, but its two crops could swap (0.10·1.1 >= 0.105·0.9). 1 and 2 could swap across the cut.
    # 3: out for sure (0.30·0.9 > 0.20·1.1). 4: far out, so its close crops cannot matter. 5: never scored.
    assert doubt.tolist() == [True, True, True, False, False, False]
    assert not in_doubt(np.zeros(6, int), crops, per_class=2, gap=0.0).any()


def test_rescoring_the_images_in_doubt_recovers_the_exact_selection():
    """Scores perturbed by less than the gap (relative) select differently; with the images in doubt put back to
    their exact scores, the selection is the exact one, over many draws."""
    rng = np.random.default_rng(0)
    classes = np.repeat([0, 1, 2], 20)
    table = pa.table({"class_index": classes.astype(np.int32), "image_id": np.arange(60)})

    def picks(scores):
        best, score = best_crops(scores)
        ranked = partial_topk(table.append_column("score", pa.array(score)).append_column(
            "best_crop", pa.array(best)), 5)
        return set(zip(ranked["image_id"].to_pylist(), ranked["best_crop"].to_pylist(), strict=True))

    differed = 0
    for _ in range(200):
        exact = rng.exponential(1.0, (60, 4))
        noisy = exact * (1 + rng.uniform(-0.05, 0.05, exact.shape))
        doubt = in_doubt(classes, noisy, per_class=5, gap=0.11)
        differed += picks(noisy) != picks(exact)
        assert picks(np.where(doubt[:, None], exact, noisy)) == picks(exact)
    assert differed > 20  # the noise alone does change selections: the test can fail
