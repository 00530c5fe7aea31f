from pathlib import Path

import pytest
import torch

from raydd.models import get_entry, get_model, list_models, load_observer, parse_spec, register_model
from raydd.models.checkpoint import find_checkpoint, load_reported_state
from raydd.train import save_checkpoint

SMALL = {"convnet3": 32, "convnet4": 64, "cifar_resnet20": 32, "resnet18_small": 32, "vit_b_16": 224}


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_runs(name):
    entry = get_entry(name)
    model = get_model(name, num_classes=7, weights=None).eval()
    side = SMALL.get(name, 64 if entry.input_size == 224 else entry.input_size)
    if name.startswith("convnet"):
        model = get_model(name, num_classes=7, input_size=side)
    with torch.no_grad():
        assert model(torch.rand(2, 3, side, side)).shape == (2, 7)


def test_convnet3_has_the_literature_parameter_count():
    assert sum(p.numel() for p in get_model("convnet3", num_classes=10).parameters()) == 320_010


def test_rded_convnets_use_batch_norm_as_its_reference_does():
    """Issue 29: RDED's reference builds ConvNets with ``net_norm="batch"``; MTT's keep instance norm."""
    bn = get_model("convnet3_bn", num_classes=10)
    norms = [type(m) for m in bn.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))]
    assert norms == [torch.nn.BatchNorm2d] * 3
    assert sum(p.numel() for p in bn.parameters()) == 320_010
    assert all(type(m) is not torch.nn.BatchNorm2d for m in get_model("convnet3").modules())


def test_cifar_resnet_loads_prefixed_legacy_checkpoints(tmp_path):
    source = get_model("cifar_resnet20")
    state = {"module." + k: v for k, v in source.state_dict().items()}
    torch.save({"best_prec1": 91.0, "state_dict": state}, tmp_path / "r20.th")
    observer = load_observer(f"cifar_resnet20@{tmp_path / 'r20.th'}")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = source.eval()(observer.normalize(x))
        assert torch.allclose(observer(x), expected)
    assert observer.input_size == 32 and observer.num_outputs == 10
    assert sum(p.numel() for p in source.parameters()) == 269_722  # ResNet-20's published 0.27 M


def test_observer_restriction_keeps_columns_in_data_order(tmp_path):
    model = get_model("cifar_resnet20")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    observer = load_observer(f"cifar_resnet20@{tmp_path / 'w.pt'}")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        full = observer(x)
        observer.restrict([7, 2])
        assert torch.equal(observer(x), full[:, [7, 2]])


def test_specs_and_their_errors(tmp_path):
    assert parse_spec("torchvision:resnet18@/w.pth") == ("resnet18", "/w.pth")
    assert parse_spec("efficientnet_lite0") == ("efficientnet_lite0", None)
    with pytest.raises(ValueError, match="no built-in pretrained weights"):
        load_observer("cifar_resnet20")
    with pytest.raises(ValueError, match="unknown model 'vgg99'"):
        load_observer("vgg99@x")
    with pytest.raises(FileNotFoundError):
        load_observer(f"cifar_resnet20@{tmp_path / 'missing.th'}")


def test_torchvision_model_from_local_weights(tmp_path):
    torch.manual_seed(0)
    reference = get_model("mobilenet_v2", weights=None).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, tmp_path / "mb.pth")
    observer = load_observer(f"torchvision:mobilenet_v2@{tmp_path / 'mb.pth'}")
    assert observer.num_outputs == 1000 and observer.input_size == 224
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():  # the weights loaded are the file's (wrapped and DDP-prefixed), not a fresh init
        assert torch.equal(observer.logits(x), reference(x))
        assert not torch.equal(get_model("mobilenet_v2", weights=None).eval()(x), reference(x))


def test_registry_refuses_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model("convnet3", input_size=32, num_classes=10)(lambda **_: None)


def test_checkpoint_round_trip_as_observer_with_class_names(tmp_path):
    model = get_model("convnet3", num_classes=3)
    save_checkpoint(tmp_path / "checkpoint_1", model=model, model_name="convnet3",
                    model_args={"num_classes": 3, "input_size": 32}, normalization=get_entry("convnet3").normalization,
                    input_size=32, classes=["cat", "dog", "owl"], epoch=1)
    observer = load_observer(f"checkpoint@{tmp_path}")
    assert find_checkpoint(tmp_path) == tmp_path / "checkpoint_1" / "model.pt"
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(observer(x), model.eval()(observer.normalize(x)))
    cmap = observer.class_map_for(["owl", "cat"])
    assert cmap.to_dict() == {"cat": 0, "owl": 2}
    with pytest.raises(ValueError, match="trained without class.*emu"):
        observer.class_map_for(["cat", "emu"])


def test_reported_state_loads_from_a_ray_checkpoint_and_is_none_on_a_fresh_start(tmp_path):
    from ray.train import Checkpoint

    torch.save({"epoch": 3, "weights": torch.ones(2)}, tmp_path / "state.pt")
    state = load_reported_state(Checkpoint.from_directory(tmp_path), "state.pt")
    assert state["epoch"] == 3 and torch.equal(state["weights"], torch.ones(2))
    assert load_reported_state(None, "state.pt") is None


def test_observer_info_is_the_loaded_observers_without_its_weights(tmp_path, monkeypatch):
    import torchvision

    from raydd.models import observer as observers
    from raydd.models.observer import load_observer, observer_info
    from tests.conftest import save_random_observer

    spec = save_random_observer(tmp_path, ["b", "a", "c"], input_size=32)
    assert observer_info(spec) == load_observer(spec).info
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(
        torchvision.models.ResNet18_Weights.DEFAULT.url).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")  # cached, and never read: an empty file would not load
    assert observer_info("torchvision:resnet18").num_outputs == 1000
    cached.unlink()  # not cached: the download is tried here (and fails offline with the advice), not in an actor
    with pytest.raises(ValueError, match="could not load torchvision's pretrained resnet18"):
        observer_info("torchvision:resnet18")
    with pytest.raises(FileNotFoundError):
        observer_info("cifar_resnet20@" + str(tmp_path / "missing.th"))

    def no_model(*args, **kwargs):
        raise AssertionError("observer_info built a model")

    monkeypatch.setattr(observers, "get_model", no_model)
    info = observer_info(spec)
    assert info.class_names == ("b", "a", "c") and info.input_size == 32
    assert info.class_map_for(["a", "b", "c"]).to_dict() == {"b": 0, "a": 1, "c": 2}


def test_torchvision_observers_default_to_the_reference_weights_and_name_others():
    """Issue 29: RDED's reference loads ``pretrained=True`` (IMAGENET1K_V1); torchvision's DEFAULT is V2 for
    ResNet-50 and MobileNetV2. A spec can name other weights; the manifest records which were loaded."""
    from raydd.models.imagenet import pretrained_weights
    from raydd.models.observer import _resolve

    assert pretrained_weights("resnet50").name == "IMAGENET1K_V1"
    assert pretrained_weights("mobilenet_v2").name == "IMAGENET1K_V1"
    assert pretrained_weights("resnet50", "IMAGENET1K_V2").name == "IMAGENET1K_V2"
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        pretrained_weights("resnet18", "IMAGENET1K_V2")
    assert _resolve("torchvision:resnet50")[2] == "DEFAULT"
    assert _resolve("torchvision:resnet50:IMAGENET1K_V2")[2] == "IMAGENET1K_V2"
    with pytest.raises(ValueError, match="named weights"):
        _resolve("cifar_resnet20:V1@w.pt")


def test_observer_info_names_the_weights_it_would_load(tmp_path):
    from raydd.models.observer import _weights_label, observer_info

    torch.save(get_model("cifar_resnet20").state_dict(), tmp_path / "w.pt")
    assert observer_info(f"cifar_resnet20@{tmp_path / 'w.pt'}").weights == f"file {tmp_path / 'w.pt'}"
    entry = get_entry("resnet50")
    assert _weights_label(entry, None, "DEFAULT") == "torchvision ResNet50_Weights.IMAGENET1K_V1"
