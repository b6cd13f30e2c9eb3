"""Tests for resnet_core.config: the flat-dict round trip, string coercion and validation messages."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from resnet_core.config import TrainConfig, apply_overrides, family_name, scaled_milestones, validate
from resnet_core.flags import add_config_arguments, config_from_args, overrides_from_args


def test_defaults_are_the_papers_cifar_recipe() -> None:
    flat = TrainConfig().to_dict()
    assert flat["model.layout"] == "cifar" and flat["model.shortcut"] == "A" and flat["model.residual"] is True
    assert flat["optim.lr"] == 0.1 and flat["optim.momentum"] == 0.9 and flat["optim.weight_decay"] == 1e-4
    assert flat["optim.batch_size"] == 128 and flat["optim.iterations"] == 64_000
    assert flat["optim.milestones"] == [32_000, 48_000]
    assert scaled_milestones(64_000) == (32_000, 48_000)
    assert flat["optim.warmup_lr"] == 0.01 and flat["optim.warmup_until_error"] == 80.0
    assert flat["data.augment"] is True and flat["model.head_dropout"] == 0.0


def test_to_dict_from_dict_round_trip() -> None:
    config = TrainConfig().replace(**{
        "model.depth": 56, "model.residual": False, "model.shortcut": "B", "model.head_dropout": 0.25,
        "data.dataset": "digits", "data.val_size": 100, "optim.lr": 0.05, "optim.milestones": [7, 9],
        "optim.warmup": True, "run.seed": 3, "run.device": "cpu", "run.precision": "fp32",
    })
    flat = config.to_dict()
    assert all("." in key for key in flat)
    assert flat["optim.milestones"] == [7, 9]  # plain list, not a tuple
    json.dumps(flat)  # plain values only: usable as MLflow params / Tune param space
    again = TrainConfig.from_dict(flat)
    assert again == config
    assert again.optim.milestones == (7, 9)
    assert TrainConfig.from_dict(json.loads(json.dumps(flat))) == config


def test_round_trip_through_strings_as_mlflow_params_store_them() -> None:
    config = TrainConfig().replace(**{"model.residual": False, "optim.milestones": [10, 20], "model.width": 2.0,
                                      "data.augment": False, "run.threads": 2})
    as_strings = {key: str(value) for key, value in config.to_dict().items()}
    assert TrainConfig.from_dict(as_strings) == config
    empty = TrainConfig().replace(**{"optim.milestones": []})
    assert TrainConfig.from_dict({k: str(v) for k, v in empty.to_dict().items()}).optim.milestones == ()


def test_missing_keys_take_defaults_and_replace_does_not_mutate() -> None:
    config = TrainConfig.from_dict({"model.depth": 32})
    assert config.model.depth == 32 and config.optim.lr == 0.1
    changed = config.replace(**{"model.depth": 44})
    assert changed.model.depth == 44 and config.model.depth == 32


def test_unknown_key_error_lists_valid_keys() -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict({"model.detph": 20})
    message = str(info.value)
    assert "model.detph" in message
    for valid in ("model.depth", "optim.lr", "data.dataset", "run.seed"):
        assert valid in message
    with pytest.raises(ValueError, match="depth"):
        TrainConfig().replace(depth=20)  # a key without its section is unknown too


@pytest.mark.parametrize(
    ("key", "value", "fragments"),
    [
        ("model.depth", 21, ["6n+2", "21"]),
        ("model.depth", 4, ["6n+2", "4"]),
        ("model.layout", "mnist", ["model.layout", "mnist", "cifar", "imagenet"]),
        ("model.shortcut", "D", ["'D'", "'A'", "'B'", "'C'"]),
        ("model.head_dropout", 1.0, ["model.head_dropout", "1.0"]),
        ("model.head_dropout", -0.1, ["model.head_dropout", "-0.1"]),
        ("model.width", 0, ["model.width", "0"]),
        ("data.dataset", "mnist", ["mnist", "cifar10", "digits", "synthetic", "imagenet"]),
        ("data.val_size", -1, ["data.val_size", "-1"]),
        ("optim.lr", 0, ["optim.lr", "0"]),
        ("optim.lr", float("nan"), ["optim.lr", "nan"]),
        ("optim.batch_size", -1, ["optim.batch_size", "-1"]),
        ("optim.iterations", 0, ["optim.iterations", "0"]),
        ("optim.milestones", [20, 10], ["optim.milestones", "[20, 10]"]),
        ("optim.milestones", [0, 10], ["optim.milestones", "[0, 10]"]),
        ("optim.momentum", 1.0, ["optim.momentum", "1.0"]),
        ("optim.warmup_until_error", 0, ["optim.warmup_until_error", "0"]),
        ("optim.warmup_until_error", 120, ["optim.warmup_until_error", "120"]),
        ("run.precision", "fp16", ["fp16", "fp32", "bf16", "auto"]),
        ("run.device", "tpu", ["tpu", "cpu", "cuda"]),
        ("run.eval_every", 0, ["run.eval_every", "0"]),
        ("run.probe_images", -5, ["run.probe_images", "-5"]),
    ],
)
def test_bad_values_are_rejected_naming_value_and_choices(key: str, value: object, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig().replace(**{key: value})
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_imagenet_depths() -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig().replace(**{"model.layout": "imagenet", "model.depth": 20})
    assert "20" in str(info.value) and "[18, 34, 50, 101, 152]" in str(info.value)
    assert TrainConfig().replace(**{"model.layout": "imagenet", "model.depth": 50}).model.depth == 50
    # 6n+2 is a CIFAR rule only: 18 is fine for imagenet, not for cifar.
    with pytest.raises(ValueError, match="6n\\+2"):
        TrainConfig().replace(**{"model.depth": 18})


def test_legacy_key_model_family_reads_as_model_layout() -> None:
    # Runs and checkpoints made before the rename store the cifar/imagenet axis as "model.family".
    old = {key: value for key, value in TrainConfig().to_dict().items() if key != "model.layout"}
    old.update({"model.family": "imagenet", "model.depth": 50})
    config = TrainConfig.from_dict(old)
    assert config.model.layout == "imagenet" and config.model.depth == 50
    assert "model.family" not in config.to_dict()  # written back under the current name only
    assert TrainConfig.from_dict({k: str(v) for k, v in old.items()}) == config  # as MLflow params store it
    with pytest.raises(ValueError, match="model.layout='mnist'"):  # validated under the current name
        TrainConfig.from_dict({"model.family": "mnist"})


def test_legacy_key_model_dropout_reads_as_model_head_dropout() -> None:
    # Runs, checkpoints and search spaces made before the rename store the dropout before the classifier as
    # "model.dropout"; it is the same knob, read and validated under its current name.
    old = {key: value for key, value in TrainConfig().to_dict().items() if key != "model.head_dropout"}
    old["model.dropout"] = 0.3
    config = TrainConfig.from_dict({k: str(v) for k, v in old.items()})  # as MLflow params store it
    assert config.model.head_dropout == 0.3 and "model.dropout" not in config.to_dict()
    assert apply_overrides(TrainConfig().to_dict(), {"model.dropout": 0.2})["model.head_dropout"] == 0.2
    with pytest.raises(ValueError, match=r"model.head_dropout must be in \[0, 1\); got 1.5"):
        TrainConfig.from_dict({"model.dropout": 1.5})


def test_head_dropout_flag_says_where_the_dropout_is() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    text = parser.format_help()
    assert "--head-dropout" in text and "--dropout " not in text
    assert "dropout before the classifier (the paper uses none)" in " ".join(text.split())
    assert "augmentation on/off (pad-4 random crop" in " ".join(text.split())
    assert config_from_args(parser.parse_args(["--head-dropout", "0.1"])).model.head_dropout == 0.1


def test_family_is_plain_or_residual() -> None:
    assert family_name(TrainConfig()) == "residual"
    assert family_name(TrainConfig().replace(**{"model.residual": False})) == "plain"
    assert family_name(TrainConfig().replace(**{"model.layout": "imagenet", "model.depth": 18})) == "residual"


def test_validation_can_be_deferred_but_validate_still_rejects() -> None:
    config = TrainConfig.from_dict({"model.depth": 21}, validate_config=False)
    assert config.model.depth == 21
    with pytest.raises(ValueError, match="6n\\+2"):
        validate(config)


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("True", True), ("1", True), ("yes", True),
                                                ("false", False), ("FALSE", False), ("0", False), ("no", False)])
def test_bool_strings_are_coerced(text: str, expected: bool) -> None:
    config = TrainConfig().replace(**{"model.residual": text, "optim.warmup": text})
    assert config.model.residual is expected and config.optim.warmup is expected


def test_milestone_and_number_strings_are_coerced() -> None:
    config = TrainConfig().replace(**{"optim.milestones": "1,2", "model.depth": "56", "optim.lr": "0.05",
                                      "optim.iterations": 3.0})
    assert config.optim.milestones == (1, 2)
    assert config.model.depth == 56 and isinstance(config.model.depth, int)
    assert config.optim.lr == 0.05 and isinstance(config.optim.lr, float)
    assert config.optim.iterations == 3 and isinstance(config.optim.iterations, int)
    assert TrainConfig().replace(**{"optim.milestones": "[5, 9]"}).optim.milestones == (5, 9)
    assert TrainConfig().replace(**{"optim.milestones": ""}).optim.milestones == ()


@pytest.mark.parametrize(
    ("key", "value"),
    [("model.depth", "abc"), ("model.depth", 20.5), ("optim.lr", "fast"), ("model.residual", "maybe"),
     ("optim.milestones", "1,x"), ("run.threads", "2.5")],
)
def test_uncoercible_values_name_key_and_value(key: str, value: object) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig().replace(**{key: value})
    assert key in str(info.value) and repr(value) in str(info.value)


# --- overrides and command-line flags --------------------------------------------------------------------


def test_apply_overrides_scales_the_milestones_with_the_iterations() -> None:
    flat = TrainConfig().to_dict()
    shorter = apply_overrides(flat, {"optim.iterations": 1000})
    assert shorter["optim.iterations"] == 1000 and shorter["optim.milestones"] == [500, 750]
    assert flat["optim.milestones"] == [32_000, 48_000]  # a new dict: the input is left alone
    # Given milestones win; without a new iteration count the milestones stay.
    assert apply_overrides(flat, {"optim.iterations": 1000, "optim.milestones": [100]})["optim.milestones"] == [100]
    assert apply_overrides(flat, {"optim.lr": 0.5})["optim.milestones"] == [32_000, 48_000]
    assert apply_overrides(flat, {"optim.iterations": "2000"})["optim.milestones"] == [1000, 1500]  # --set strings
    with pytest.raises(ValueError, match="optim.iterations='many'"):
        apply_overrides(flat, {"optim.iterations": "many"})


def test_apply_overrides_reads_legacy_keys() -> None:
    old = {key: value for key, value in TrainConfig().to_dict().items() if key != "model.layout"}
    old["model.family"] = "cifar"
    merged = apply_overrides(old, {"model.family": "imagenet", "model.depth": 18})
    assert merged["model.layout"] == "imagenet" and "model.family" not in merged
    assert TrainConfig.from_dict(merged).model.layout == "imagenet"


def _parser(**kwargs: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, **kwargs)
    return parser


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return set(re.findall(r"--[a-z][\w-]*", parser.format_help())) - {"--help"}


STUDY_KEYS = ["data.dataset", "data.data_dir", "optim.iterations", "run.eval_every", "model.shortcut", "model.depth"]


def test_a_parser_built_with_keys_has_only_their_flags() -> None:
    parser = _parser(keys=STUDY_KEYS)
    assert _flags(parser) == {"--dataset", "--data-dir", "--iterations", "--eval-every", "--shortcut", "--depth"}
    with pytest.raises(SystemExit):  # not among the keys: not a flag
        parser.parse_args(["--lr", "0.5"])
    assert _flags(_parser(keys=["model.residual"])) == {"--residual", "--no-residual", "--plain"}
    every = _flags(_parser())
    assert {"--layout", "--depth", "--milestones", "--threads", "--plain", "--no-augment"} <= every
    assert "--family" not in every
    with pytest.raises(ValueError, match="model.detph.*model.depth"):
        _parser(keys=["model.detph"])


def test_flag_help_comes_from_the_field() -> None:
    text = " ".join(_parser().format_help().split())
    assert "layers: 6n+2 for cifar" in text and "(default: 64000)" in text and "(default: True)" in text
    assert "(default: 50% and 75% of --iterations" in text  # a described default, %-escaped for argparse
    assert "training error (%) that ends warm-up (default: 80.0)" in text
    preset = " ".join(_parser(keys=STUDY_KEYS, default_help="the preset's").format_help().split())
    assert preset.count("(default: the preset's)") == len(STUDY_KEYS)
    assert "(default: 64000)" not in preset and "(default: cifar10)" not in preset


def test_overrides_from_args_returns_only_the_flags_given() -> None:
    parser = _parser()
    parser.add_argument("--depths")  # a caller's own flag is not a config key
    args = parser.parse_args(["--depth", "56", "--plain", "--no-augment", "--milestones", "5,9", "--depths", "1"])
    assert overrides_from_args(args) == {"model.depth": 56, "model.residual": False, "data.augment": False,
                                         "optim.milestones": "5,9"}
    assert overrides_from_args(parser.parse_args([])) == {}


def test_config_from_args_applies_the_milestone_rule() -> None:
    parser = _parser()
    assert config_from_args(parser.parse_args(["--iterations", "1000"])).optim.milestones == (500, 750)
    given = parser.parse_args(["--iterations", "1000", "--milestones", "300"])
    assert config_from_args(given).optim.milestones == (300,)
    base = TrainConfig().replace(**{"optim.iterations": 400, "optim.milestones": [100]})
    assert config_from_args(parser.parse_args(["--lr", "0.5"]), base).optim.milestones == (100,)


@pytest.mark.parametrize(("argv", "choices"), [
    (["--shortcut", "D"], ["'A'", "'B'", "'C'"]),
    (["--layout", "mnist"], ["'cifar'", "'imagenet'"]),
    (["--dataset", "mnist"], ["'cifar10'", "'imagenet'"]),
])
def test_an_enumerated_flag_refuses_a_value_outside_its_choices(argv: list[str], choices: list[str],
                                                                capsys: pytest.CaptureFixture) -> None:
    """The field's choices (config.py metadata, the tuple validate checks) are the flag's: argparse refuses the rest."""
    with pytest.raises(SystemExit) as info:
        _parser().parse_args(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"invalid choice: '{argv[1]}'" in err
    assert all(choice in err for choice in choices), err


@pytest.mark.parametrize(("argv", "fragments"), [
    (["--milestones", "1,x"], ["optim.milestones", "'1,x'"]),
])
def test_a_bad_flag_value_is_refused_naming_value_and_choices(argv: list[str], fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        config_from_args(_parser().parse_args(argv))
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
