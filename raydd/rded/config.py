"""The configuration of one RDED distillation; defaults are the published settings (RDED, Sun et al. 2024)."""

from __future__ import annotations

from dataclasses import dataclass

from raydd.config import config_hash, option
from raydd.models.precision import PRECISIONS, REDUCED
from raydd.scaling import Scaling

__all__ = ["DECODERS", "RdedConfig"]

DECODERS = ("auto", "tasks", "actor")


@dataclass
class RdedConfig(Scaling):
    """What to distil and how; a worker (``Scaling``) is a scoring actor, an observer replica."""

    data: str = option(help="training images: ImageFolder root or Parquet, local or s3://, gs://")
    out: str = option(help="output folder (never overwritten; a partial run of the same config resumes)",
                      execution=True)
    observers: list[str] = option(help="observer spec(s), e.g. torchvision:resnet18 (several: mean score)",
                                  flags=("--observer",))
    ipc: int = option(10, help="distilled images per class")
    factor: int = option(2, help="patches per side of a distilled image (1 for 32-64 px data, 2 for 128-224)")
    mipc: int = option(300, help="candidate images drawn per class")
    num_crops: int = option(5, help="random crops scored per candidate image")
    input_size: int | None = option(None, help="distilled image side (default: the first observer's input)")
    min_scale: float = option(0.08, help="smallest crop area, as a fraction of the image")
    max_scale: float = option(1.0, help="largest crop area, as a fraction of the image")
    class_map: str | None = option(None, help="'sorted', 'imagenet' (wnid folders), or a JSON/text file "
                                              "(default: by the observer's class names, else sorted)")
    classes: list[str] | None = option(None, help="distil only these class folders (default: all)",
                                       flags=("--class",))
    seed: int = option(0, help="seed for candidate sampling and crop boxes")
    precision: str = option("auto", help="scoring precision: auto (tf32 on GPU; on CPU bf16 where the cores have "
                                         "native bf16, else fp32), fp32, tf32, bf16, fp16")
    decode: str = option("auto", help="where candidates are decoded: tasks (CPU tasks, Pillow with JPEG draft mode), "
                                      "actor (on the scoring actor's device: nvJPEG on a GPU), auto (actor on GPU "
                                      "actors, else tasks)")
    channels_last: bool = option(True, help="channels-last memory format for the observers")
    jpeg_draft: bool = option(True, help="decode JPEGs at reduced size when crops are much smaller")
    refine_margin: int | None = option(None, help="with bf16/fp16 scoring: rescore in fp32 every crop of each "
                                                  "class's best ipc·factor² + margin images, so that the selection "
                                                  "is fp32's (default: ipc·factor²/8 + 2; 0: off)")
    refine_gap: float = option(0.05, help="with tf32 scoring: rescore in fp32 the images a relative score error below "
                                         "this could move across their class's cut-off or give another best crop "
                                         "(0: off)")
    soft_label_topk: int = option(10, help="logits kept per soft label (fp16 top-k)")
    image_format: str = option("png", help="png (lossless) or jpeg")
    batch_size: int | None = option(None, execution=True, help="crops per observer forward (default: 256 on GPU; on "
                                    "CPU 32 at fp32, 64 at bf16/fp16, which keeps an actor under 2 GB)")
    block_images: int = option(256, execution=True, help="candidate images per Ray Data block (each block: one actor "
                               "call)")
    reads_in_flight: int = option(32, execution=True, help="file (or Parquet shard) reads each reading task keeps "
                                  "in flight: object stores answer each request after tens of ms")
    scores_part_images: int = option(2048, execution=True, help="images per scores part file (the resume "
                                     "granularity)")
    from_scores: str | None = option(None, execution=True, help="reuse the scores of an earlier run's output (no "
                                     "rescoring)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.observers, str):
            self.observers = [self.observers]
        if not self.observers:
            raise ValueError("at least one observer is needed: --observers SPEC")
        if self.refine_margin is not None and self.refine_margin < 0:
            raise ValueError("refine_margin must be 0 or more")
        if self.refine_gap < 0:
            raise ValueError("refine_gap must be 0 or more")
        for name in ("ipc", "factor", "mipc", "num_crops", "batch_size", "block_images",
                     "soft_label_topk", "scores_part_images", "reads_in_flight"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.ipc * self.factor**2 > self.mipc:
            raise ValueError(f"ipc * factor^2 = {self.ipc * self.factor**2} patches per class are needed but only "
                             f"mipc = {self.mipc} candidates are drawn; raise --mipc or lower --ipc/--factor")
        if not 0 < self.min_scale <= self.max_scale <= 1:
            raise ValueError("crop scale must satisfy 0 < min_scale <= max_scale <= 1")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}")
        if self.image_format not in ("png", "jpeg"):
            raise ValueError("image_format must be png or jpeg")
        if self.decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}")

    @property
    def per_class(self) -> int:
        """Patches selected per class."""
        return self.ipc * self.factor**2

    @property
    def decode_on_actor(self) -> bool:
        """Whether the scoring actors decode the candidates (else CPU tasks do)."""
        return self.decode == "actor" or (self.decode == "auto" and self.use_gpu)

    def refines(self, precision: str) -> bool:
        """Whether scoring at the resolved ``precision`` is followed by an fp32 pass over some images."""
        return self.refine_count(precision) > 0 or (precision == "tf32" and self.refine_gap > 0)

    def refine_count(self, precision: str) -> int:
        """Images per class beyond ``per_class`` whose crops are rescored in fp32 when scoring ran at the resolved
        ``precision`` (0 unless that is bf16 or fp16)."""
        if precision not in REDUCED:
            return 0
        return self.per_class // 8 + 2 if self.refine_margin is None else self.refine_margin

    def result_hash(self) -> str:
        return config_hash(self)

    def scoring_hash(self) -> str:
        """What the scores depend on: a later run with another ipc can reuse them."""
        return config_hash(self, exclude=("ipc", "soft_label_topk", "image_format", "refine_margin", "refine_gap"))
