"""The configuration of one evaluation: which students, trained how, on which sets, tested on what."""

from __future__ import annotations

from dataclasses import dataclass

from raydd.config import option
from raydd.models.precision import check_train_precision
from raydd.scaling import Restartable

__all__ = ["EvalConfig", "rded_recipe", "rded_test_side"]

PROTOCOLS = ("rded", "mtt")
BASELINES = ("random", "random_patches", "herding")
SCORES = ("none", "dd-ranking")
SOFT_LABELS = ("online", "stored", "stored_cells")


# AdamW learning rates RDED's reference sets per student (argument.py); every other student trains at 1e-3.
REFERENCE_ADAMW_LR = {"vgg11": 5e-4, "alexnet": 1e-4, "efficientnet_b0": 2e-3, "mobilenet_v2": 2.5e-3,
                      "vit_b_16": 1e-4, "swin_v2_t": 1e-4}
CONV3 = ("convnet3", "convnet3_bn")


def rded_recipe(ipc: int, num_classes: int, input_size: int, student: str,
                teacher_model: str = "") -> tuple[int, float]:
    """Batch size and AdamW learning rate as RDED's reference sets them (argument.py), data sets told apart by
    their class count and side: 10 / 50 / 100 images a batch at IPC 1 / 10 / 50, doubled for 100 and 1,000
    classes; 100 on Tiny-ImageNet (200 classes, 64 px); CIFAR-100 distilled and evaluated with ConvNet-3 →
    ConvNet-3: batch 25, lr 2e-3; never more than the set holds."""
    batch = (10 if ipc <= 1 else 50 if ipc <= 10 else 100) * (2 if num_classes in (100, 1000) else 1)
    lr = REFERENCE_ADAMW_LR.get(student, 1e-3)
    if num_classes == 200 and input_size == 64:
        batch = 100
    if num_classes == 100 and input_size == 32 and student in CONV3 and teacher_model in CONV3:
        batch, lr = 25, 2e-3
    return min(batch, ipc * num_classes), lr


def rded_test_side(size: int) -> int:
    """The side RDED's reference resizes test images to before a centre crop of ``size``: ``size // 7 * 8``
    (32 → 32, CIFAR's images as they are; 64 → 72; 224 → 256)."""
    return size // 7 * 8


@dataclass
class EvalConfig(Restartable):
    """One evaluation; a worker (``Scaling``) is one student trial, run as a Ray Tune trial."""

    distilled: str = option(help="a raydd distilled set, or any ImageFolder of training images")
    val_data: str = option(help="real validation images (same class folders)")
    out: str = option(help="report folder (never overwritten)")
    protocol: str = option("rded", help="rded (KD from a teacher, AdamW) or mtt (hard labels, DSA, SGD)")
    student: str | None = option(None, help="student model from the zoo (default: convnet3_bn for RDED, whose "
                                 "reference builds ConvNets with BatchNorm; convnet3, instance norm, for MTT)")
    input_size: int | None = option(None, help="student input side (default: the distilled images')")
    teacher: str | None = option(None, help="RDED: teacher observer spec (default: the set's first observer)")
    class_map: str | None = option(None, help="RDED: class map for the teacher ('imagenet' for wnid folders; "
                                              "default: by the teacher's class names, else sorted folders)")
    soft_labels: str = option("online", help="RDED: online (teacher on every batch), stored (each image's stored "
                              "label, mixed as the images are) or stored_cells (each view labelled by its grid "
                              "cells' stored labels, by the area each shows)")
    temperature: float | None = option(None, help="RDED: KD temperature (default 20 with CutMix, 4 with Mixup)")
    mix: str = option("cutmix", help="RDED: cutmix or mixup")
    factor: int | None = option(None, help="RDED: patches per side for strip shuffling and the crop scale "
                                           "(default: the set's)")
    epochs: int | None = option(None, help="epochs (default: 300 RDED, 1000 MTT)")
    batch_size: int | None = option(None, help="batch size (default: RDED's reference's by IPC, classes and "
                                               "student; 256 for MTT)")
    lr: float | None = option(None, help="learning rate (default: RDED's reference's per student, 1e-3 for most; "
                                         "the set's learned lr, else 0.01, MTT)")
    weight_decay: float | None = option(None, help="weight decay (default: 0.01 RDED, 5e-4 MTT)")
    seeds: list[int] = option([0, 1, 2], help="one student per seed, trained in parallel", flags=("--seed",))
    baseline: str = option("none", help="also evaluate: none, random (real images), random_patches, herding "
                                        "(the observer's coreset), both (random and random_patches), or several "
                                        "joined by commas")
    herding_observer: str | None = option(None, help="observer whose penultimate features herding uses (default: "
                                                     "the teacher, else the set's first observer)")
    scores: str = option("none", help="dd-ranking: also train the trials DD-Ranking's scores need (hard labels, "
                                      "no augmentation, the full data) and report HLR, IOR, LRS and ARS")
    score_lambda: float = option(0.5, help="dd-ranking: λ of LRS and ARS")
    full_data_epochs: int = option(200, help="dd-ranking: epochs of the full-data hard-label run (DD-Ranking's "
                                             "CIFAR ConvNet-3 setting: SGD 0.01, batch 512, lr x0.1 at half-way)")
    full_data_acc: float | None = option(None, help="dd-ranking: the full data's hard-label accuracy (a fraction) "
                                                    "if known; skips that run")
    cache_dir: str | None = option(None, execution=True, help="where full-data accuracies are kept, per data, "
                                   "student, size and epochs (default ~/.cache/raydd)")
    real_data: str | None = option(None, help="real training images the baselines draw from")
    ipc: int | None = option(None, help="images per class of the baselines (default: the set's)")
    precision: str = option("auto", help="student and teacher autocast: auto (bf16 on GPU, fp32 on CPU), fp32, bf16")
    eval_every: int = option(25, help="test every N epochs for the curve (the final epoch always)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.seeds, int):
            self.seeds = [self.seeds]
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}")
        if self.student is None:
            self.student = "convnet3_bn" if self.protocol == "rded" else "convnet3"
        unknown = [b for b in self.baselines() if b not in BASELINES]
        if unknown:
            raise ValueError(f"baseline must be none, both or among {BASELINES}, got {', '.join(unknown)}")
        if self.scores not in SCORES:
            raise ValueError(f"scores must be one of {SCORES}")
        if self.scores == "dd-ranking" and not self.real_data:  # before the baselines' check: it adds random
            raise ValueError("DD-Ranking's scores compare with a random real subset and the full training data: "
                             "pass --real-data TRAIN_FOLDER")
        if self.baselines() and not self.real_data:
            raise ValueError("a baseline draws from real images: pass --real-data TRAIN_FOLDER")
        if not 0.0 <= self.score_lambda <= 1.0:
            raise ValueError("score_lambda must be in [0, 1]")
        if self.full_data_acc is not None and not 0.0 <= self.full_data_acc <= 1.0:
            raise ValueError("full_data_acc is a fraction in [0, 1]")
        if self.soft_labels not in SOFT_LABELS:
            raise ValueError(f"soft_labels must be one of {', '.join(SOFT_LABELS)}")
        if self.mix not in ("cutmix", "mixup"):
            raise ValueError("mix must be cutmix or mixup")
        if not self.seeds:
            raise ValueError("at least one seed")
        check_train_precision(self.precision)
        if self.eval_every < 1:
            raise ValueError("eval_every must be at least 1")

    def baselines(self) -> list[str]:
        """The baseline sets to train beside the distilled one (dd-ranking adds the random subset)."""
        named = {"none": [], "both": ["random", "random_patches"]}
        wanted = [b for part in self.baseline.split(",") for b in named.get(part.strip(), [part.strip()])]
        if self.scores == "dd-ranking" and "random" not in wanted:
            wanted.insert(0, "random")
        return list(dict.fromkeys(wanted))
