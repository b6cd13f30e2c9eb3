"""ImageNet on trees smaller than ILSVRC-2012 (issue 29): the smoke preset's generated digits set written when it
is missing (a real ImageNet never is), and the recipe's held-out split scaled down to a small tree. Real trees on
disk (resnet_core/imagenet/sample.py, tests/support/imagenet.py), real decoding, no mocks."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from resnet_core import TrainConfig, fit
from resnet_core.config import apply_overrides
from resnet_core.data import DatasetUnavailableError, check_dataset, download_dataset
from resnet_core.imagenet.folders import find_imagenet
from resnet_core.imagenet.stream import ImageNetSource, hold_out
from sweeps.cli import plan_from_argv
from sweeps.depth_vs_error import STUDY
from sweeps.driver.plan import check_plan, download_data
from sweeps.presets import IMAGENET, IMAGENET_SMOKE
from tests.support.configs import imagenet_config
from tests.support.imagenet import DIRTY, write_imagenet
from tests.support.plans import store_args

SMALL = 3 * 30 + len(DIRTY)  # training images of the small tree: 30 per class and the dirty files of class 0


def preset_config(preset: dict, data_dir: Path, **changes: object) -> TrainConfig:
    """A preset's config with its data in ``data_dir``."""
    return TrainConfig.from_dict(apply_overrides({**TrainConfig().to_dict(), **preset},
                                                 {"data.data_dir": str(data_dir), **changes}))


@pytest.fixture(scope="module")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet(tmp_path_factory.mktemp("small") / "tree", "class folders", train_per_class=30)


# --- A: the smoke preset's sample set ---------------------------------------------------------------------


def test_the_smoke_sweep_writes_its_missing_sample_once_before_trials(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data" / "digits-imagenet"
    plan = plan_from_argv(STUDY, ["--preset", "imagenet-smoke", "--data-dir", str(data), "--depths", "18",
                                  "--no-report", *store_args(tmp_path)])
    check_plan(plan)  # missing, but the driver will write it: not the licence message
    assert not data.exists()
    download_data(plan)
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "writing the generated digits set" in line]
    assert str(data) in line
    files = find_imagenet(data)
    assert (len(files.classes), len(files.train), len(files.val)) == (10, 1437, 360)
    assert [p.name for p in data.parent.iterdir()] == ["digits-imagenet"]  # no partial folder left behind
    check_plan(plan)  # the real tree passes the preflight
    download_data(plan)  # there already: left as it is
    assert "writing the generated" not in capsys.readouterr().out
    assert find_imagenet(data).train == files.train


def test_a_missing_sample_is_written_by_the_data_step_and_then_passes_the_check(tmp_path: Path, capsys) -> None:
    data = tmp_path / "digits-imagenet"
    config = preset_config(IMAGENET_SMOKE, data).data
    check_dataset(config)  # nothing there yet: download_dataset writes it
    download_dataset(config)
    assert "writing the generated digits set there" in capsys.readouterr().out
    check_dataset(TrainConfig.from_dict({**preset_config(IMAGENET_SMOKE, data).to_dict(),
                                         "data.download": False}).data)  # the tree itself, checked
    assert len(find_imagenet(data).train) == 1437


def test_a_missing_sample_without_download_says_how_to_write_it(tmp_path: Path) -> None:
    data = tmp_path / "digits-imagenet"
    config = preset_config(IMAGENET_SMOKE, data, **{"data.download": False}).data
    with pytest.raises(DatasetUnavailableError) as error:
        check_dataset(config)
    message = str(error.value)
    assert f"python -m resnet_core.imagenet.sample {data}" in message and "--download" in message
    assert "licence" not in message
    assert not data.exists()


def test_a_missing_real_imagenet_is_never_written(tmp_path: Path, capsys) -> None:
    data = tmp_path / "imagenet"
    config = preset_config(IMAGENET, data).data
    assert config.generated == "none"
    with pytest.raises(DatasetUnavailableError, match="needs a licence"):
        check_dataset(config)
    download_dataset(config)  # nothing to fetch: ImageNet is never written
    assert not data.exists() and capsys.readouterr().out == ""
    with pytest.raises(ValueError, match=r"needs a licence.*only a generated set \(data\.generated"):
        preset_config(IMAGENET, data, **{"data.download": True})
    with pytest.raises(ValueError, match=r"data\.generated='digits' is a set in ImageNet's layout"):
        preset_config({"data.dataset": "cifar10"}, data, **{"data.generated": "digits"})
    with pytest.raises(ValueError, match=r"data\.generated='cifar' is not valid; choose one of \['none', 'digits'\]"):
        preset_config(IMAGENET_SMOKE, data, **{"data.generated": "cifar"})


# --- B: the held-out split on a small tree ----------------------------------------------------------------


@pytest.mark.parametrize("asked", [10_000, 500])  # the recipe's value, and one given explicitly: both capped
def test_hold_out_on_a_small_tree_takes_a_tenth_by_seed_disjoint_from_training(small_tree: Path, asked: int) -> None:
    samples = list(find_imagenet(small_tree).train)
    assert len(samples) == SMALL
    train, held = hold_out(samples, asked, seed=0)
    assert len(held) == SMALL // 10 and len(train) == SMALL - SMALL // 10
    assert not set(train) & set(held) and sorted(train + held) == sorted(samples)
    assert train == sorted(train) and held == sorted(held)  # both in file order
    assert hold_out(samples, asked, seed=0) == (train, held)  # the seed decides
    assert hold_out(samples, asked, seed=1)[1] != held
    smaller = hold_out(samples, 4, seed=0)[1]  # under the cap: as asked, a subset of the same draw
    assert len(smaller) == 4 and set(smaller) <= set(held)


def test_hold_out_keeps_one_image_per_class_on_a_tiny_tree(tmp_path: Path) -> None:
    samples = list(find_imagenet(write_imagenet(tmp_path / "tiny", "class folders", train_per_class=2)).train)
    train, held = hold_out(samples, 10_000, seed=0)  # 9 images: a tenth is 0, the floor is the 3 classes
    assert len(held) == 3 and len(train) == 6


def test_the_source_says_it_scaled_the_split_and_records_the_number(small_tree: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="resnet_core.imagenet.stream"):
        source = ImageNetSource(imagenet_config(small_tree, **{"data.val_size": 10_000}), torch.device("cpu"))
    (record,) = [r for r in caplog.records if "held out" in r.getMessage()]
    assert record.getMessage().startswith(f"held out {SMALL // 10} of the {SMALL} training images")
    assert "data.val_size=10000 asks for more" in record.getMessage() and "10%" in record.getMessage()
    assert len(source.val) == SMALL // 10 and source.identity["data.held_out"] == str(SMALL // 10)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="resnet_core.imagenet.stream"):
        source = ImageNetSource(imagenet_config(small_tree, **{"data.val_size": 5}), torch.device("cpu"))
    assert len(source.val) == 5 and not [r for r in caplog.records if "held out" in r.getMessage()]


def test_the_papers_plateau_recipe_trains_on_a_small_tree(small_tree: Path) -> None:
    cfg = imagenet_config(small_tree, **{"data.val_size": 10_000, "optim.schedule": "plateau",
                                         "optim.iterations": 2, "run.eval_every": 2})
    (result,) = list(fit(cfg))
    assert result.status == "completed" and result.metrics["val/images"] == SMALL // 10
