import pytest

from raydd.cli import get_parser, main
from raydd.config import config_from_args, load_config
from raydd.train import TrainConfig
from raydd.train.trainer import run_torch_trainer


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


def test_ray_train_local_mode_is_refused_before_ray_starts():
    # Ray Train's local mode (0 workers) keeps no checkpoint: a run would lose its result and never resume.
    with pytest.raises(ValueError, match="local mode"):
        run_torch_trainer(lambda config: None, {}, num_workers=0, use_gpu=False, name="x", storage_path="/tmp/x")


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
