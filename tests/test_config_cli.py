import argparse
import dataclasses

import pytest

from raydd.cli import get_parser, main
from raydd.config import config_from_args, config_hash, execution_fields, load_config
from raydd.train import TrainConfig


def test_yaml_then_flags_precedence(tmp_path):
    (tmp_path / "c.yaml").write_text("data: /d\nepochs: 7\nlr: 0.5\n")
    args = get_parser().parse_args(["train", "--config", str(tmp_path / "c.yaml"), "--epochs", "3"])
    config = config_from_args(TrainConfig, args)
    assert (config.data, config.epochs, config.lr, config.batch_size) == ("/d", 3, 0.5, 256)


def test_unknown_and_missing_keys_are_errors(tmp_path):
    (tmp_path / "c.yaml").write_text("data: /d\nepoch: 7\n")
    with pytest.raises(ValueError, match="unknown option.*epoch"):
        load_config(TrainConfig, tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="missing required option.*--data"):
        load_config(TrainConfig)


def test_invalid_values_say_what_is_allowed():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        TrainConfig(data="/d", optimizer="lamb")
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(data="/d", precision="fp16")
    with pytest.raises(ValueError, match="num_workers must be at least 1"):
        TrainConfig(data="/d", num_workers=0)


def test_every_flag_of_every_command_has_help():
    """Every option of every subcommand: a flag for each config field, and a help text that says something."""
    import dataclasses

    from raydd.cli import _commands, get_parser

    parser = get_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    checked = 0
    for name, (_, cls, _) in _commands().items():
        actions = {a.dest: a for a in subparsers[name]._actions if a.option_strings and a.dest != "help"}
        if cls is not None:
            assert {f.name for f in dataclasses.fields(cls)} <= set(actions), name
        for dest, action in actions.items():
            if action.help == argparse.SUPPRESS:  # a renamed flag, there only to name its new spelling
                continue
            assert action.help and len(action.help.split()) >= 2, f"{name} --{dest}"
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(("command", "stated"), [
    ("rded", "--mipc MIPC candidate images drawn per class (default: 300)"),
    ("evaluate", "--mix MIX RDED: cutmix or mixup (default: 'cutmix')"),
    ("experts", "--model MODEL zoo model of the experts (default: 'convnet3')"),
    ("match", "--method METHOD iadd (learned importance weights) or mtt (W = 1) (default: 'iadd')"),
    ("train", "--input-size INPUT_SIZE image side in pixels (default: the model's)"),
])
def test_help_states_each_default_once_and_never_as_none(command, stated, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert stated in text
    assert "(default: None)" not in text
    for entry in text.split(" --")[1:]:
        assert entry.count("default") <= 1, entry


def test_cli_reports_bad_input_cleanly(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "none")]) == 2
    assert "no such image source" in capsys.readouterr().err


JOBS = ["raydd.rded:RdedConfig", "raydd.train:TrainConfig", "raydd.trajectories:ExpertsConfig",
        "raydd.matching:MatchConfig", "raydd.evaluate:EvalConfig"]


def _job(path: str) -> type:
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("job", JOBS)
def test_every_job_spells_its_scaling_the_same_and_leaves_it_out_of_its_hash(job):
    from raydd.config import RENAMED
    from raydd.scaling import Scaling

    cls = _job(job)
    shared = {f.name for f in dataclasses.fields(Scaling)}
    assert shared <= set(execution_fields(cls))
    assert not set(RENAMED) & {f.name for f in dataclasses.fields(cls)}


def test_result_hashes_are_the_ones_runs_made_before_the_shared_scaling_config():
    """A partial or finished run keeps resuming (or being found finished) across the change of spellings."""
    from raydd.evaluate import EvalConfig
    from raydd.matching import MatchConfig
    from raydd.rded import RdedConfig

    rded = RdedConfig(data="d", out="o", observers=["x"])
    assert (rded.result_hash(), rded.scoring_hash()) == ("9ddeeee6ed8c45eb", "1a475a31c686ef59")
    # Changed by issue 30 (weights_step, weights_bound and hold_still; group steps the default): matching runs
    # made before it are redone rather than resumed ("27db207981e675a8", then "ccfdfe25832af6f7" before).
    assert config_hash(MatchConfig(data="d", experts="e", out="o")) == "bebdbb302808286b"
    match = MatchConfig(data="d", experts="e", out="o")
    # A matching result also names its worker count (each worker draws its own students): "bebdbb302808286b"
    # before, which kept returning a set made by 2 workers to a run asking for 4.
    assert match.result_hash() == MatchConfig(data="d", experts="e", out="o", num_workers=1).result_hash()
    assert match.result_hash() != MatchConfig(data="d", experts="e", out="o", num_workers=2).result_hash()
    assert match.result_hash() == MatchConfig(data="d", experts="e", out="o", checkpoint_every=7, cpus_per_worker=2,
                                              name="other").result_hash()
    # Changed by issue 29 (RDED's default student is convnet3_bn, its reference's BatchNorm ConvNet):
    # "5dc92d0662f95447" before.
    assert config_hash(EvalConfig(distilled="d", val_data="v", out="o")) == "db9a20d6edd300da"
    moved = RdedConfig(data="d", out="elsewhere", observers=["x"], num_workers=8, gpus_per_worker=0.5,
                       cpus_per_worker=2, threads_per_worker=1, batch_size=512, address="ray://h:10001")
    assert moved.result_hash() == rded.result_hash()


def test_renamed_options_are_refused_with_their_new_name(capsys):
    from raydd.evaluate import EvalConfig

    with pytest.raises(SystemExit):
        main(["rded", "--data", "d", "--out", "o", "--observer", "x", "--num-actors", "2"])
    assert "--num-actors is now --num-workers" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--data", "d", "--use-gpu"])
    assert "--use-gpu is now --gpus-per-worker" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cpus_per_trial is now cpus_per_worker"):
        load_config(EvalConfig, distilled="d", val_data="v", out="o", cpus_per_trial=2)
