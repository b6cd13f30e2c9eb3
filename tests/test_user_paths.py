"""What a new user meets at the first step: the messages name flags the command has, help says what is true,
presets follow their own stated rules."""

from __future__ import annotations

import re

import pytest

from resnet_core.config import DataConfig
from resnet_core.data import DatasetUnavailableError, check_dataset
from sweeps import depth_vs_error, regularization, shortcut_options
from sweeps.cli import study_arg_parser
from support.plans import plan_for, store_args, tiny_args

STUDIES = [depth_vs_error.STUDY, shortcut_options.STUDY, regularization.STUDY]


def _flags(study) -> set[str]:
    return {flag for action in study_arg_parser(study)._actions for flag in action.option_strings}


@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.name)
def test_the_missing_cifar_message_names_a_flag_the_sweep_has(study, tmp_path):
    """It said "pass --download", and the sweeps answered "unrecognized arguments: --download"."""
    with pytest.raises(DatasetUnavailableError) as missing:
        check_dataset(DataConfig(dataset="cifar10", data_dir=str(tmp_path)))
    named = set(re.findall(r"--[a-z][a-z-]+", str(missing.value)))
    assert "--download" in named and named <= _flags(study), named - _flags(study)


def test_a_sweep_downloads_with_the_flag_the_message_names(tmp_path):
    plan = plan_for([*tiny_args(), *store_args(tmp_path), "--dataset", "cifar10", "--data-dir", str(tmp_path),
                     "--download"])
    assert plan.base["data.download"] is True and plan.base["data.dataset"] == "cifar10"


@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.name)
def test_every_flag_the_help_names_exists(study, monkeypatch):
    """--resume's help said "except --report": the flag is --no-report."""
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at hyphens otherwise
    parser = study_arg_parser(study)
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*[a-z]", parser.format_help()))
    assert named <= _flags(study), sorted(named - _flags(study))
    assert "--no-report" in next(a.help for a in parser._actions if "--resume" in a.option_strings)


@pytest.mark.parametrize("study", STUDIES, ids=lambda s: s.name)
def test_paper_presets_pack_at_most_what_their_rule_says(study):
    """The preset's own comment: without MPS, 2-3 eager trials per GPU are the useful most."""
    paper = study.preset("paper")
    assert 1 / paper.gpus_per_trial <= 3


def test_the_first_line_says_which_preset_why_and_how_many_trials(tmp_path, capsys):
    """Without --preset a GPU machine silently got the paper's sweep; now the line says its size and the others."""
    from sweeps.cli import announced_plan

    args = study_arg_parser(depth_vs_error.STUDY).parse_args([*tiny_args(), *store_args(tmp_path)])
    plan = announced_plan(depth_vs_error.STUDY, args)
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("preset: smoke (--preset given)") and f"; {len(plan.configs())} trials" in line
    assert "--preset paper" in line


@pytest.mark.parametrize("dataset", ["digits", "synthetic"])
def test_a_data_dir_for_a_built_in_data_set_is_refused_not_ignored(dataset, tmp_path, capsys):
    """It was silently ignored: `--dataset digits --data-dir ~/cifar` (a slip for cifar10) trained on digits."""
    from resnet_core.train import main as train

    assert train(["--dataset", dataset, "--data-dir", str(tmp_path / "cifar"), "--iterations", "5"]) == 2
    assert f"--data-dir '{tmp_path / 'cifar'}' is not read by --dataset {dataset}" in capsys.readouterr().err
    argv = [*tiny_args(), *store_args(tmp_path), "--dataset", dataset, "--set", f"data.data_dir={tmp_path}"]
    assert depth_vs_error.main(argv) == 2
    assert "'cifar10', 'cifar100', 'imagenet'" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()
