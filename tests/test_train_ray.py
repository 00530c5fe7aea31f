"""One real Ray Train run: 2 gloo workers on unequal shards, stopped after an epoch, then resumed from its
checkpoint on 1."""

import math

from raydd.models import load_observer
from raydd.train import TrainConfig, fit
from tests.conftest import make_image_folder


def test_two_workers_train_resume_and_load_as_observer(tmp_path, ray_session):
    classes = ["a", "b", "c"]
    train = make_image_folder(tmp_path / "train", classes, 24, size=32)
    (train / "c" / "0023.png").unlink()  # 71 images: shards of 36 and 35, 3 and 2 full batches of 12
    val = make_image_folder(tmp_path / "val", classes, 6, size=32, seed=1)
    config = TrainConfig(data=str(train), val_data=str(val), epochs=1, batch_size=24, lr=0.05,
                         num_workers=2, storage_path=str(tmp_path / "runs"), name="obs")
    first = fit(config)  # every rank must take the same number of DDP steps, or the all-reduce waits forever
    assert first.metrics["epoch"] == 1 and first.metrics["resumed_from"] == 0 and first.metrics["autocast"] == "fp32"
    assert first.metrics["steps"] == 2

    # Same name and storage: continues after epoch 1, now on one worker with both CPUs, under bf16 autocast.
    config.epochs, config.precision, config.num_workers, config.cpus_per_worker = 4, "bf16", 1, 2
    second = fit(config)
    assert second.metrics["resumed_from"] == 1 and second.metrics["epoch"] == 4 and second.metrics["autocast"] == "bf16"
    assert second.metrics["val_acc"] >= 0.9  # the generated classes are separable by colour

    observer = load_observer(f"checkpoint@{tmp_path / 'runs' / 'obs'}")
    assert observer.class_names == tuple(classes)

    # One more epoch with label smoothing 1: the targets are uniform, so the cross-entropy cannot fall below ln 3
    # whatever the model predicts; the trained model's unsmoothed loss is far below that.
    assert second.metrics["train_loss"] < 0.9
    config.epochs, config.label_smoothing = 5, 1.0
    third = fit(config)
    assert third.metrics["resumed_from"] == 4 and third.metrics["train_loss"] >= math.log(3) - 1e-3
