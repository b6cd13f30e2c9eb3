"""Tests for resnet_core/imagenet/ (layouts, preflight, dirty files, the recipes, streaming, 10-crop) and for
ImageNet through ``fit`` and the CLI: a generated tree (tests/support/imagenet.py), real decoding, no mocks."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_core import TrainConfig, fit
from resnet_core.config import IMAGENET_RECIPE_OVERRIDES, imagenet_recipe
from resnet_core.data import DataConfig, DatasetUnavailableError, check_dataset
from resnet_core.evaluation import evaluate_batches
from resnet_core.imagenet.decode import ImageDecodeError, load_rgb
from resnet_core.imagenet.folders import _claim, find_imagenet, preflight, survey
from resnet_core.imagenet.sample import write_digits_sample
from resnet_core.imagenet.stream import EpochBatches, ImageNetSource
from resnet_core.imagenet.transforms import EIGVAL, EIGVEC, MEAN, BatchSteps, centre_view, ten_crop_view, train_view
from resnet_core.models import build_model, count_parameters
from resnet_core.schedule import PlateauRule
from resnet_core.train import main
from tests.support.configs import imagenet_config
from tests.support.resume import assert_resumes_bit_for_bit
from tests.support.imagenet import DIRTY, LAYOUTS, WNIDS, class_image, truncate, write_imagenet

TRAIN_IMAGES = 3 * 6 + len(DIRTY)  # 6 per class plus the dirty files of class 0


# --- layouts and the preflight ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_gives_the_same_labels_in_sorted_wnid_order(tmp_path: Path, layout: str) -> None:
    files = find_imagenet(write_imagenet(tmp_path / "tree", layout))
    assert files.classes == WNIDS  # class index = sorted wnid
    assert len(files.train) == TRAIN_IMAGES and len(files.val) == 6
    for path, label in files.train:
        assert Path(path).parent.name == WNIDS[label]
    assert [label for _, label in files.val] == [0, 0, 1, 1, 2, 2]
    assert files.layout == layout


def test_survey_counts_claims_a_subset_and_fingerprints_the_file_list(tmp_path: Path, tree: Path) -> None:
    summary = survey(find_imagenet(tree))
    assert (summary.classes, summary.train, summary.val, summary.min_per_class) == (3, TRAIN_IMAGES, 6, 6)
    assert summary.claim.startswith("a subset of ILSVRC-2012 (3/1000 classes")
    assert survey(find_imagenet(tree)).fingerprint == summary.fingerprint  # stable
    copy = shutil.copytree(tree, tmp_path / "copy")
    assert survey(find_imagenet(copy)).fingerprint == summary.fingerprint  # independent of where it lies
    (copy / "train" / WNIDS[1] / f"{WNIDS[1]}_0.JPEG").rename(copy / "train" / WNIDS[2] / "moved.JPEG")
    assert survey(find_imagenet(copy)).fingerprint != summary.fingerprint
    assert set(summary.identity()) >= {"data.fingerprint", "data.claim", "data.train_images"}


def test_a_tree_without_wnids_or_meta_is_just_a_class_folder_tree(tmp_path: Path) -> None:
    root = tmp_path / "plain"
    for split in ("train", "val"):
        for name in ("cat", "dog"):
            (root / split / name).mkdir(parents=True)
            class_image(0, np.random.default_rng(0)).save(root / split / name / "a.jpg")
    assert survey(find_imagenet(root)).claim == "a class-folder tree"


def test_the_full_counts_make_the_ilsvrc_claim_and_more_than_it_has_is_refused(tree: Path) -> None:
    """The claim's other branches, on the counts (a test cannot hold 1.28 M files): ILSVRC-2012's exact counts
    are ILSVRC-2012; more classes or images than it has is a mixed-up tree, refused naming what is over."""
    files = find_imagenet(tree)
    full = {"classes": 1000, "train": 1_281_167, "val": 50_000}
    assert _claim(files, full) == "ILSVRC-2012"
    with pytest.raises(DatasetUnavailableError, match=r"holds more than it has: \{'val': 50001\}"):
        _claim(files, {**full, "val": 50_001})


@pytest.mark.parametrize("kind", sorted(DIRTY))
def test_dirty_files_imagenet_really_has_load_as_rgb(tree: Path, kind: str) -> None:
    path = str(tree / "train" / WNIDS[0] / DIRTY[kind])
    assert load_rgb(path).shape[0] == 3 and load_rgb(path).dtype == torch.uint8
    assert centre_view(path, 32).shape == (3, 32, 32)
    view = train_view(path, "paper", 32, np.random.default_rng(0))
    assert view.pixels.shape == (3, 32, 32) and view.pixels.dtype == torch.uint8
    if kind == "gray":  # gray stays gray in RGB
        assert torch.equal(view.pixels[0], view.pixels[1]) and torch.equal(view.pixels[1], view.pixels[2])
    else:  # class 0 is red (tests/support/imagenet.py): the colours survive the decode (an inverted CMYK would not)
        r, g, b = load_rgb(path).float().mean(dim=(1, 2)).tolist()
        assert r > 150 and g < 60 and b < 60, (r, g, b)


def test_a_truncated_file_is_an_error_naming_it_before_training(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path / "tree")
    bad = truncate(root / "train" / WNIDS[1] / f"{WNIDS[1]}_3.JPEG")
    with pytest.raises(DatasetUnavailableError, match=r"unreadable image .*_3\.JPEG.*truncated JPEG"):
        preflight(root)
    with pytest.raises(DatasetUnavailableError, match="truncated"):  # what a sweep's driver checks
        check_dataset(DataConfig(dataset="imagenet", data_dir=str(root)))
    with pytest.raises(ImageDecodeError, match=str(bad)):  # without the check: still named, never garbage
        centre_view(str(bad), 32)
    with pytest.raises(DatasetUnavailableError, match="truncated"):
        next(fit(imagenet_config(root)))


def _no_class_folders(root: Path) -> None:
    shutil.rmtree(root / "train")
    (root / "train").mkdir()


def _flat_val_without_ground_truth(root: Path) -> None:
    (root / "meta.bin").unlink()


def _mismatched_classes(root: Path) -> None:
    shutil.rmtree(root / "val" / WNIDS[2])


def _unreadable(root: Path) -> None:
    (root / "val" / "ILSVRC2012_val_00000003.JPEG").write_bytes(b"not an image at all")


@pytest.mark.parametrize("layout, spoil, fragments", [
    ("torchvision", lambda root: shutil.rmtree(root), ["is not a directory", "needs a licence"]),
    ("torchvision", lambda root: shutil.rmtree(root / "val"), ["no val/ folder"]),
    ("torchvision", _no_class_folders, ["has no class folders", "expected one sub-folder per class"]),
    ("flat val", _flat_val_without_ground_truth, ["flat folder of 6 images", "no ground truth", "meta.bin"]),
    ("torchvision", _mismatched_classes, ["different class folders", WNIDS[2]]),
    ("flat val", _unreadable, ["ILSVRC2012_val_00000003.JPEG", "neither a JPEG nor a PNG"]),
])
def test_bad_trees_fail_before_training_naming_the_path(tmp_path: Path, layout: str, spoil, fragments: list[str]) -> None:
    root = write_imagenet(tmp_path / "tree", layout)
    spoil(root)
    with pytest.raises(DatasetUnavailableError) as error:
        next(fit(imagenet_config(root)))
    for fragment in [str(root.name), *fragments]:
        assert fragment in str(error.value)


def test_imagenet_cannot_be_downloaded() -> None:
    with pytest.raises(ValueError, match="licence"):
        TrainConfig().replace(**{"data.dataset": "imagenet", "model.layout": "imagenet", "model.depth": 18,
                                 "data.download": True})


# --- the recipes ---------------------------------------------------------------------------------------------


def test_recipes_hold_the_papers_and_torchvisions_numbers() -> None:
    paper, tv = TrainConfig.from_dict(imagenet_recipe("paper")), TrainConfig.from_dict(imagenet_recipe("torchvision"))
    assert (paper.optim.batch_size, paper.optim.lr, paper.optim.momentum, paper.optim.weight_decay) == (256, 0.1, 0.9, 1e-4)
    assert paper.optim.iterations == 600_000 and paper.optim.schedule == "plateau" and paper.data.val_size > 0
    assert paper.model.bottleneck_stride == "1x1" and paper.model.head_dropout == 0.0
    assert tv.optim.milestones == (30 * 5004, 60 * 5004) and tv.optim.iterations == 90 * 5004
    assert tv.model.bottleneck_stride == "3x3" and tv.data.recipe == "torchvision"
    assert set(IMAGENET_RECIPE_OVERRIDES) == {"paper", "torchvision"}
    # enough decoding processes to feed a GPU: a ResNet-50 at ~2 500 images/s needs 7-8 at ~350 images/s each
    # (docs/benchmarks.md); it was 2, the CPU default
    assert paper.run.data_workers == tv.run.data_workers >= 7
    with pytest.raises(ValueError, match="held out of the training set"):
        paper.replace(**{"data.val_size": 0})


def test_plateau_rule_drops_after_patience_evaluations_without_enough_improvement() -> None:
    rule = PlateauRule(patience=2, threshold=1.0)
    # 50 -> 45 improves; 44.5 is not enough (< 1 point); 44.2 neither: two stale evaluations -> drop.
    assert [rule.observe(e) for e in (50.0, 45.0, 44.5, 44.2)] == [False, False, False, True]
    assert rule.drops == 1 and rule.stale == 0
    assert [rule.observe(e) for e in (43.0, 43.5, 43.9)] == [False, False, True]  # 43.0 is 1.2 below 44.2
    restored = PlateauRule(2, 1.0)
    restored.load_state_dict(rule.state_dict())
    assert restored == rule


def test_bottleneck_stride_on_the_first_1x1_is_the_papers_caffe_model() -> None:
    paper, v15 = (build_model("imagenet", 50, bottleneck_stride=s) for s in ("1x1", "3x3"))
    assert paper.layer2[0].conv1.stride == (2, 2) and paper.layer2[0].conv2.stride == (1, 1)
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert count_parameters(paper) == count_parameters(v15)
    assert paper(torch.zeros(1, 3, 64, 64)).shape == (1, 10)
    with pytest.raises(ValueError, match="bottleneck_stride"):
        build_model("imagenet", 50, bottleneck_stride="2x2")


def test_paper_crops_come_from_the_scale_range_and_the_seed(tree: Path) -> None:
    path = str(tree / "train" / WNIDS[0] / f"{WNIDS[0]}_0.JPEG")
    views = [train_view(path, "paper", 32, np.random.default_rng((0, 0, slot))) for slot in range(8)]
    again = train_view(path, "paper", 32, np.random.default_rng((0, 0, 0)))
    assert torch.equal(views[0].pixels, again.pixels) and torch.equal(views[0].lighting, again.lighting)
    assert len({v.pixels.numpy().tobytes() for v in views}) > 1  # different slots, different crops
    assert {v.flipped for v in views} == {True, False}
    tv = train_view(path, "torchvision", 32, np.random.default_rng(0))
    assert tv.pixels.shape == (3, 32, 32) and not tv.lighting.any()


def test_flipped_views_are_mirror_images(tmp_path: Path) -> None:
    # A horizontal gradient, dark on the left: every unflipped crop brightens to the right, every flipped one
    # darkens.
    path = tmp_path / "gradient.JPEG"
    gradient = np.broadcast_to(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], (100, 200, 3))
    Image.fromarray(np.ascontiguousarray(gradient)).save(path, quality=95)
    for recipe in ("paper", "torchvision"):
        views = [train_view(str(path), recipe, 32, np.random.default_rng((0, 0, slot))) for slot in range(16)]
        assert {v.flipped for v in views} == {True, False}
        for v in views:
            left, right = v.pixels[0, :, :4].float().mean(), v.pixels[0, :, -4:].float().mean()
            assert (right < left) == v.flipped


def test_batched_steps_light_and_normalise() -> None:
    steps = BatchSteps("paper", torch.device("cpu"))
    pixels = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    pixels[:, :, :, 0] = 255  # the left column white
    alpha = torch.tensor([[0.0, 0.0, 0.0], [0.1, -0.2, 0.3]])
    x = steps.finish(pixels, alpha)
    mean = torch.tensor(MEAN).view(3, 1)
    assert torch.allclose(x[0, :, :, 0], 1 - mean) and torch.allclose(x[0, :, :, 3], -mean)
    shift = torch.tensor(EIGVEC) @ (alpha[1] * torch.tensor(EIGVAL))  # AlexNet: rgb += V (α λ)
    assert torch.allclose(x[1, :, :, 0], 1 - mean + shift.view(3, 1), atol=1e-6)
    views = steps.finish(pixels[:, None].expand(2, 10, 3, 4, 4))  # 10-crop batches: N×V×C×H×W
    assert views.shape == (2, 10, 3, 4, 4) and torch.equal(views[:, 3], steps.finish(pixels))
    tv = BatchSteps("torchvision", torch.device("cpu")).finish(pixels)
    assert torch.allclose(tv[0, :, 0, 0], (1 - torch.tensor(MEAN)) / torch.tensor((0.229, 0.224, 0.225)))


def test_ten_crop_is_corners_centre_and_their_flips(tree: Path) -> None:
    path = str(tree / "val" / WNIDS[1] / "ILSVRC2012_val_00000003.JPEG")
    crops = ten_crop_view(path, 32)
    assert crops.shape == (10, 3, 32, 32)
    assert torch.equal(crops[5], crops[1].flip(-1)) and torch.equal(crops[6], crops[0].flip(-1))
    assert (crops[4].float() - centre_view(path, 32).float()).abs().mean() < 2  # the same centre, ±resampling


def test_ten_crop_scores_average_the_softmax_of_the_views() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6))
    x, y = torch.randn(3, 10, 3, 2, 2), torch.tensor([0, 1, 2])
    scores = evaluate_batches(model, [(x, y)], None, channels_last=False)
    with torch.no_grad():
        p = model(x.flatten(0, 1)).softmax(1).view(3, 10, 6).mean(1)
    assert math.isclose(scores.loss, float(-p[torch.arange(3), y].log().mean()), rel_tol=1e-5)
    assert scores.error == pytest.approx(100.0 * float((p.argmax(1) != y).float().mean()))


# --- streaming -------------------------------------------------------------------------------------------


def test_epoch_batches_start_anywhere_and_cover_each_epoch_once() -> None:
    stream = iter(EpochBatches(10, 3, seed=0, start=0))
    first = [next(stream) for _ in range(7)]  # 3 batches per epoch (one image dropped), into epoch 2
    assert [key[1] for batch in first for key in batch[:1]] == [0, 0, 0, 1, 1, 1, 2]
    assert len({key[0] for batch in first[:3] for key in batch}) == 9
    later = iter(EpochBatches(10, 3, seed=0, start=4))
    assert [next(later) for _ in range(3)] == first[4:7]


def test_batches_do_not_depend_on_the_number_of_workers(tree: Path) -> None:
    batches = {}
    for workers in (0, 2):
        source = ImageNetSource(imagenet_config(tree, **{"run.data_workers": workers}), torch.device("cpu"))
        batches[workers] = [source.training_batch(k) for k in range(5)]  # across an epoch boundary (21 // 4)
    for (x0, y0), (x2, y2) in zip(batches[0], batches[2]):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


@pytest.mark.parametrize("recipe", ["paper", "torchvision"])
def test_fit_reports_centre_crop_every_evaluation_and_10_crop_at_the_end(tree: Path, recipe: str) -> None:
    results = list(fit(imagenet_config(tree, recipe)))
    assert [r.iteration for r in results] == [3, 6] and results[-1].status == "completed"
    for r in results:
        for key in ("train/error", "test/error", "test/top5_error", "test/loss"):
            assert math.isfinite(r.metrics[key])
        assert r.metrics["test/images"] == 6.0 and "probe/response_std_mean" in r.metrics
    assert "test/error_10crop" not in results[0].metrics
    assert {"test/error_10crop", "test/top5_error_10crop"} <= set(results[-1].metrics)
    assert results[-1].info["recipe"] == recipe and results[-1].info["data.fingerprint"]


def test_a_killed_run_resumed_mid_epoch_continues_bit_for_bit(tree: Path, tmp_path: Path) -> None:
    # 18 training images after holding out 3: 4 batches of 4 per epoch; the checkpoint at iteration 3 is mid
    # epoch 0, and the run goes on into epoch 2. The plateau rule (its state is in the checkpoint) drops the lr.
    changes = {"data.val_size": 3, "optim.schedule": "plateau", "optim.plateau_patience": 1,
               "optim.plateau_threshold": 100.0, "optim.iterations": 9, "run.eval_every": 3}
    cfg = imagenet_config(tree, **changes)
    uninterrupted = list(fit(cfg))
    assert [r.metrics["opt/lr"] for r in uninterrupted] == pytest.approx([0.1, 0.1, 0.01])  # the first evaluation sets the best
    assert_resumes_bit_for_bit(cfg, uninterrupted, tmp_path)


# --- the CLI and the sample set ----------------------------------------------------------------------------


def test_cli_trains_imagenet_and_reports_both_evaluations(tree: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--dataset", "imagenet", "--data-dir", str(tree), "--depth", "18", "--width", "0.125",
            "--crop-size", "32", "--batch-size", "4", "--iterations", "4", "--eval-every", "2", "--schedule",
            "steps", "--val-size", "0", "--threads", "1", "--device", "cpu", "--data-workers", "0",
            "--probe-images", "4", "--eval-batch-size", "8", "--no-progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "recipe=paper" in out and "data.fingerprint=" in out
    assert "centre crop" in out and "10-crop" in out


def test_cli_missing_data_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--dataset", "imagenet", "--data-dir", str(tmp_path / "nowhere"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "needs a licence" in err


def test_the_sample_set_is_an_imagenet_layout_of_the_digits(tmp_path: Path) -> None:
    root = write_digits_sample(tmp_path / "digits")
    files, summary = preflight(root)
    assert (summary.classes, summary.train, summary.val) == (10, 1437, 360)
    assert files.classes == tuple(f"digit_{d}" for d in range(10)) and summary.claim == "a class-folder tree"
    sizes = {tuple(load_rgb(path).shape) for path, _ in files.train[:20]}
    assert len(sizes) > 10  # varied sizes
