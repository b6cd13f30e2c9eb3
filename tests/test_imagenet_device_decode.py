"""Tests for the device-decode path (``run.decode=device``, resnet_core/imagenet/device_decode.py), on CPU: the
training process decodes and crops the batch, the workers only read the files and draw the augmentation.

On a CPU device both paths run the same decoder (torchcodec's libjpeg-turbo) and the same antialiased uint8
resize on the same pixel regions, so the batches are equal bit for bit (measured: max |difference| = 0 over
every batch below, both recipes, dirty files included); the tests hold them to that. On a GPU, nvJPEG's IDCT
and chroma upsampling and the float32 CUDA resize differ from the CPU's: how much is for bench/gpu_proof.py to
measure on the first GPU (CI has none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_core import fit
from resnet_core.imagenet.decode import ImageDecodeError
from resnet_core.imagenet.device_decode import DeviceDecoder, EncodedImages, collate_encoded, read_header
from resnet_core.imagenet.stream import ImageNetSource
from resnet_core.imagenet.transforms import train_view
from resnet_core.parallel import Shard
from resnet_core.train import main
from tests.support.configs import imagenet_config
from tests.support.resume import assert_resumes_bit_for_bit
from tests.support.imagenet import DIRTY, WNIDS, class_image, truncate, write_imagenet

CPU = torch.device("cpu")


def crops_of(paths: list[str], recipe: str = "paper", device: torch.device = CPU, slot: int = 0) -> torch.Tensor:
    """The device path's uint8 crops of ``paths`` (keys (i, 0, slot + i)), as the training process cuts them."""
    images = EncodedImages([(p, 0) for p in paths], recipe, 32, seed=0)
    batch = collate_encoded([images[(i, 0, slot + i)] for i in range(len(paths))])
    return DeviceDecoder(32, device).crops(batch)


def worker_crops(paths: list[str], recipe: str = "paper", slot: int = 0) -> torch.Tensor:
    """The worker path's crops of the same keys."""
    return torch.stack([train_view(p, recipe, 32, np.random.default_rng((0, 0, slot + i))).pixels
                        for i, p in enumerate(paths)])


@pytest.mark.parametrize("recipe, workers", [("paper", 0), ("torchvision", 2)])
def test_device_path_gives_the_worker_paths_batches(tree: Path, recipe: str, workers: int) -> None:
    ours = ImageNetSource(imagenet_config(tree, recipe, **{"run.decode": "device", "run.data_workers": workers}), CPU)
    theirs = ImageNetSource(imagenet_config(tree, recipe), CPU)
    assert ours._decoder is not None and theirs._decoder is None  # the option reaches the source
    for k in range(7):  # 21 images, 5 batches of 4 an epoch: into epoch 1, every dirty file met
        (x, y), (x_ref, y_ref) = ours.training_batch(k), theirs.training_batch(k)
        assert x.shape == x_ref.shape == (4, 3, 32, 32) and x.dtype == x_ref.dtype == torch.float32
        assert torch.equal(y, y_ref)
        assert torch.equal(x, x_ref)  # same decoder and resize on CPU: max |difference| 0
    again = ImageNetSource(imagenet_config(tree, recipe, **{"run.decode": "device"}), CPU)
    assert torch.equal(again.training_batch(5)[0], ours.training_batch(5)[0])  # started anywhere: the same batch


def test_data_parallel_slices_of_the_device_path_make_the_whole_batch(tree: Path) -> None:
    whole = ImageNetSource(imagenet_config(tree, **{"run.decode": "device"}), CPU)
    ranks = [ImageNetSource(imagenet_config(tree, **{"run.decode": "device"}), CPU) for _ in range(2)]
    for rank, source in enumerate(ranks):
        source.shard = Shard(rank, 2)  # as a process of a two-process group sees it
    for k in (0, 6):
        x, y = whole.training_batch(k)
        parts = [source.training_batch(k) for source in ranks]
        assert parts[0][0].shape == (2, 3, 32, 32)
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)


def test_the_header_sends_dirty_files_to_the_cpu_decoder_and_they_load(tree: Path) -> None:
    folder = tree / "train" / WNIDS[0]
    kinds = {kind: read_header((folder / name).read_bytes()) for kind, name in DIRTY.items()}
    assert kinds["png"] is None and kinds["cmyk"] is None  # decoded and cut in the worker
    assert kinds["gray"].kind == "gray"  # decoded as gray by the device decoder, repeated to RGB
    plain = read_header((folder / f"{WNIDS[0]}_0.JPEG").read_bytes())
    with Image.open(folder / f"{WNIDS[0]}_0.JPEG") as image:
        assert (plain.kind, plain.height, plain.width) == ("rgb", image.height, image.width)
    paths = [str(folder / name) for name in DIRTY.values()] + [str(folder / f"{WNIDS[0]}_1.JPEG")]
    images = EncodedImages([(p, 0) for p in paths], "paper", 32, seed=0)
    assert [images[(i, 0, i)].kind for i in range(len(paths))] == ["cpu", "cpu", "gray", "rgb"]
    for recipe in ("paper", "torchvision"):
        crops = crops_of(paths, recipe)
        assert crops.shape == (4, 3, 32, 32) and crops.dtype == torch.uint8
        assert torch.equal(crops, worker_crops(paths, recipe))
    gray = crops_of(paths)[2]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_exif_rotated_and_rgb_coded_jpegs_go_to_the_cpu_decoder(tmp_path: Path) -> None:
    image = class_image(1, np.random.default_rng(0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: the decoders turn it, so the stored size is not the image's
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=90)
    exif[0x0112] = 1
    image.save(tmp_path / "upright.jpg", exif=exif, quality=90)
    assert read_header((tmp_path / "rotated.jpg").read_bytes()) is None
    assert read_header((tmp_path / "upright.jpg").read_bytes()).kind == "rgb"
    paths = [str(tmp_path / "rotated.jpg"), str(tmp_path / "upright.jpg")]
    assert torch.equal(crops_of(paths), worker_crops(paths))
    assert read_header(b"\xff\xd8\xff") is None and read_header(b"GIF89a") is None


def test_a_bad_file_in_a_batch_is_decoded_file_by_file_and_named(tmp_path: Path) -> None:
    root = write_imagenet(tmp_path / "tree")
    folder = root / "train" / WNIDS[1]
    good = [str(folder / f"{WNIDS[1]}_{i}.JPEG") for i in (0, 1)]
    bad = truncate(folder / f"{WNIDS[1]}_3.JPEG")
    assert read_header(bad.read_bytes()) is not None  # its header is whole: the decoder finds out
    with pytest.raises(ImageDecodeError, match=str(bad)):
        crops_of([good[0], str(bad), good[1]])
    assert torch.equal(crops_of(good), worker_crops(good))


def _decoder_failing(monkeypatch: pytest.MonkeyPatch, error: Exception, on_batches: bool, on_files: bool) -> None:
    """torchcodec's decode_jpeg as the device path calls it, raising ``error`` for batches and/or single files."""
    from resnet_core.imagenet import device_decode

    real = device_decode.decode_jpeg

    def decode(sources, **kwargs):
        if (on_batches and isinstance(sources, list)) or (on_files and not isinstance(sources, list)):
            raise error
        return real(sources, **kwargs)

    monkeypatch.setattr(device_decode, "decode_jpeg", decode)


def test_decode_fallbacks_are_counted_and_logged_with_the_file(tmp_path: Path, monkeypatch, caplog) -> None:
    """They were silent: a GPU whose files all went to the CPU decoder looked like a slow GPU."""
    root = write_imagenet(tmp_path / "tree")
    paths = [str(root / "train" / WNIDS[1] / f"{WNIDS[1]}_{i}.JPEG") for i in (0, 1)]
    _decoder_failing(monkeypatch, RuntimeError("nvjpeg: unsupported\nmore"), on_batches=True, on_files=True)
    images = EncodedImages([(p, 0) for p in paths], "paper", 32, seed=0)
    decoder = DeviceDecoder(32, CPU)
    with caplog.at_level("WARNING", logger="resnet_core.imagenet.device_decode"):
        crops = decoder.crops(collate_encoded([images[(i, 0, i)] for i in range(2)]))
    assert torch.equal(crops, worker_crops(paths))  # the CPU decoder's pixels, as the worker path's
    assert decoder.fallbacks == {"batches": 1, "files": 2}
    logged = [r.getMessage() for r in caplog.records]
    assert any("rejected a batch of 2 files (nvjpeg: unsupported)" in m for m in logged), logged
    assert all(any(p in m and "the CPU decoder takes it" in m for m in logged) for p in paths), logged


@pytest.mark.parametrize("on_batches", [True, False], ids=["batch", "file"])
def test_running_out_of_device_memory_is_raised_not_decoded_around(tmp_path: Path, monkeypatch, on_batches) -> None:
    root = write_imagenet(tmp_path / "tree")
    paths = [str(root / "train" / WNIDS[1] / f"{WNIDS[1]}_{i}.JPEG") for i in (0, 1)]
    if not on_batches:  # the batch is rejected for another reason, then a file runs out of memory
        _decoder_failing(monkeypatch, RuntimeError("bad batch"), on_batches=True, on_files=False)
    _decoder_failing(monkeypatch, torch.OutOfMemoryError("CUDA out of memory"), on_batches=on_batches,
                     on_files=not on_batches)
    with pytest.raises(torch.OutOfMemoryError):
        crops_of(paths)


def test_fit_with_device_decode_trains_as_the_worker_path_and_resumes_bit_for_bit(tree: Path, tmp_path: Path) -> None:
    # As tests/test_imagenet.py's resume test: 18 training images after holding out 3, 4 batches an epoch, the
    # checkpoint at iteration 3 is mid epoch 0, the run goes on into epoch 2.
    changes = {"data.val_size": 3, "optim.schedule": "plateau", "optim.plateau_patience": 1,
               "optim.plateau_threshold": 100.0, "optim.iterations": 9, "run.eval_every": 3, "run.decode": "device"}
    cfg = imagenet_config(tree, **changes)
    uninterrupted = list(fit(cfg))
    assert [r.iteration for r in uninterrupted] == [3, 6, 9] and uninterrupted[-1].status == "completed"
    assert "test/error_10crop" in uninterrupted[-1].metrics
    workers = list(fit(cfg.replace(**{"run.decode": "workers"})))  # on CPU: the same pixels, the same run
    for a, b in zip(uninterrupted, workers):
        assert a.metrics["train/loss"] == b.metrics["train/loss"] and a.metrics["val/error"] == b.metrics["val/error"]
    assert_resumes_bit_for_bit(cfg, uninterrupted, tmp_path)


def test_a_bad_decode_value_is_refused_naming_the_choices(tree: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match=r"run\.decode='gpu' is not valid; choose one of \['workers', 'device'\]"):
        imagenet_config(tree, **{"run.decode": "gpu"})
    with pytest.raises(SystemExit) as exit_:  # the flag's choices: argparse refuses the rest, naming them
        main(["--dataset", "imagenet", "--data-dir", str(tree), "--decode", "nvjpeg", "--device", "cpu"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'nvjpeg'" in err and "'workers', 'device'" in err
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--decode" in capsys.readouterr().out
