"""Tests for resnet_core.data: loaders on real file formats, splits, mean subtraction, augmentation."""

from __future__ import annotations

import itertools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_core.config import DataConfig
from resnet_core.data import Dataset, DatasetUnavailableError, augment_batch, load_dataset
from support.cifar import PER_FILE, image_batch


def _raw_cifar(files: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The written images of some files as float N×3×32×32 in [0, 1], and their labels."""
    batches = [image_batch(i) for i in files]
    images = np.concatenate([d for d, _ in batches]).reshape(-1, 3, 32, 32)
    labels = sum((lab for _, lab in batches), [])
    return torch.from_numpy(images).float() / 255, torch.tensor(labels)


def test_written_files_have_cifar_format(cifar_dir: Path) -> None:
    with open(cifar_dir / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="bytes")  # how the CIFAR web page says to read them
    assert set(entry) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert entry[b"data"].dtype == np.uint8 and entry[b"data"].shape == (PER_FILE, 3072)


def test_cifar10_loads_and_round_trips(cifar_dir: Path) -> None:
    data = load_dataset(DataConfig(dataset="cifar10", data_dir=str(cifar_dir)))
    assert isinstance(data, Dataset)
    assert (data.name, data.num_classes, data.image_size, data.in_channels, data.hflip) == ("cifar10", 10, 32, 3, True)
    assert data.val is None
    assert data.train.images.shape == (5 * PER_FILE, 3, 32, 32) and data.test.images.shape == (PER_FILE, 3, 32, 32)
    for split in (data.train, data.test):
        assert split.images.dtype == torch.float32 and split.images.is_contiguous()
        assert split.labels.dtype == torch.int64

    train_raw, train_labels = _raw_cifar(list(range(5)))
    test_raw, test_labels = _raw_cifar([5])
    mean = train_raw.mean(dim=0)
    assert torch.equal(data.train.labels, train_labels) and torch.equal(data.test.labels, test_labels)
    # Scaled to [0, 1], then the training split's per-pixel mean subtracted: adding it back gives the pixels.
    torch.testing.assert_close(data.train.images + mean, train_raw, rtol=0, atol=1e-6)
    torch.testing.assert_close(data.test.images + mean, test_raw, rtol=0, atol=1e-6)
    assert data.train.images.mean(dim=0).abs().max() < 1e-6


def test_cifar_tampered_file_is_rejected(cifar_dir: Path) -> None:
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_3"
    content = bytearray(path.read_bytes())
    content[content.index(b"img_2_7.png") + 4] ^= 0x01  # "2" becomes "3" in a file name
    path.write_bytes(bytes(content))
    with open(path, "rb") as f:
        pickle.load(f, encoding="latin1")  # the file still unpickles: only the md5 sum can tell
    with pytest.raises(DatasetUnavailableError, match="not found or corrupted") as caught:
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(cifar_dir)))
    assert str(cifar_dir) in str(caught.value)


def test_cifar_missing_says_how_to_provide_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(missing)))
    message = str(caught.value)
    for needed in (str(missing), "cifar-10-batches-py", "--data-dir", "--download",
                   "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"):
        assert needed in message


def test_cifar100_missing_names_its_own_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="CIFAR-100 .*cifar-100-python"):
        load_dataset(DataConfig(dataset="cifar100", data_dir=str(tmp_path)))


def test_relative_data_dir_is_reported_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetUnavailableError, match=repr(str(tmp_path / "data"))):
        load_dataset(DataConfig(dataset="cifar10", data_dir="data"))


# --- validation hold-out and train_limit ------------------------------------------------------------

def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def _recover(train: torch.Tensor, val: torch.Tensor, raw: torch.Tensor) -> tuple[list[int], list, torch.Tensor]:
    """Which written images ended up in train and val (by content), and the mean that was subtracted.

    The mean is unknown, so try each written image as the original of the first training image; only the
    right one turns every training image back into a written image.
    """
    lookup = {img.numpy().tobytes(): i for i, img in enumerate(_to_uint8(raw))}

    def originals(images: torch.Tensor, mean: torch.Tensor) -> list:
        return [lookup.get(img.numpy().tobytes()) for img in _to_uint8(images + mean)]

    for candidate in raw:
        mean = candidate - train[0]
        train_index = originals(train, mean)
        if None not in train_index:
            return train_index, originals(val, mean), mean
    raise AssertionError("the training images are not the written images minus one mean")


def test_val_split_is_disjoint_deterministic_and_mean_from_train(cifar_dir: Path) -> None:
    config = DataConfig(dataset="cifar10", data_dir=str(cifar_dir), val_size=30)
    data = load_dataset(config, seed=1)
    assert data.val is not None
    assert len(data.train.labels) == 70 and len(data.val.labels) == 30
    assert data.val.images.dtype == torch.float32 and data.val.labels.dtype == torch.int64

    raw, labels = _raw_cifar(list(range(5)))
    train_index, val_index, mean = _recover(data.train.images, data.val.images, raw)
    assert None not in val_index
    assert not set(train_index) & set(val_index)
    assert sorted(train_index + val_index) == list(range(100))
    torch.testing.assert_close(mean, raw[train_index].mean(dim=0), rtol=0, atol=1e-6)  # train only
    assert not torch.allclose(mean, raw.mean(dim=0), atol=1e-3)
    assert torch.equal(data.train.labels, labels[train_index]) and torch.equal(data.val.labels, labels[val_index])

    again = load_dataset(config, seed=1)
    assert torch.equal(again.train.images, data.train.images) and torch.equal(again.val.images, data.val.images)
    other = load_dataset(config, seed=2)
    assert set(_recover(other.train.images, other.val.images, raw)[1]) != set(val_index)
    assert torch.equal(other.test.labels, data.test.labels)  # the test set never depends on the seed


def test_val_size_too_large_is_an_error() -> None:
    with pytest.raises(ValueError, match="val_size=512.*512 training images"):
        load_dataset(DataConfig(dataset="synthetic", val_size=512))


def test_train_limit_keeps_first_images_and_their_mean(cifar_dir: Path) -> None:
    data = load_dataset(DataConfig(dataset="cifar10", data_dir=str(cifar_dir), train_limit=25))
    raw, labels = _raw_cifar(list(range(5)))
    assert data.train.images.shape == (25, 3, 32, 32) and len(data.test.labels) == PER_FILE
    assert torch.equal(data.train.labels, labels[:25])
    torch.testing.assert_close(data.train.images + raw[:25].mean(dim=0), raw[:25], rtol=0, atol=1e-6)

    limited = load_dataset(DataConfig(dataset="synthetic", val_size=100, train_limit=50), seed=3)
    full = load_dataset(DataConfig(dataset="synthetic", val_size=100), seed=3)
    assert len(limited.train.labels) == 50 and len(limited.val.labels) == 100
    assert torch.equal(limited.train.labels, full.train.labels[:50])
    assert torch.equal(limited.val.labels, full.val.labels)


def test_unknown_dataset_names_the_choices() -> None:
    with pytest.raises(ValueError, match="'mnist'.*cifar10.*synthetic"):
        load_dataset(DataConfig(dataset="mnist"))


# --- digits and synthetic -----------------------------------------------------------------------------

def test_digits() -> None:
    data = load_dataset(DataConfig(dataset="digits"), seed=0)
    assert (data.num_classes, data.image_size, data.in_channels, data.hflip) == (10, 8, 3, False)
    assert data.train.images.shape == (1437, 3, 8, 8) and data.test.images.shape == (360, 3, 8, 8)
    assert data.val is None
    for split in (data.train, data.test):
        assert split.images.dtype == torch.float32 and split.labels.dtype == torch.int64
        assert set(split.labels.tolist()) == set(range(10))
        assert torch.equal(split.images[:, 0], split.images[:, 2])  # grey replicated into 3 channels
    assert data.train.images.mean(dim=0).abs().max() < 1e-5

    # The test set is fixed: the run seed only moves images between train and val.
    other = load_dataset(DataConfig(dataset="digits", val_size=137), seed=7)
    assert torch.equal(other.test.labels, data.test.labels)
    assert len(other.train.labels) == 1300 and len(other.val.labels) == 137
    mean_shift = data.test.images[0] - other.test.images[0]  # the two train means differ, nothing else
    torch.testing.assert_close(data.test.images - mean_shift, other.test.images, rtol=0, atol=1e-5)


def test_synthetic_is_deterministic_and_learnable() -> None:
    first = load_dataset(DataConfig(dataset="synthetic"), seed=0)
    second = load_dataset(DataConfig(dataset="synthetic"), seed=5)
    assert (first.num_classes, first.image_size, first.in_channels, first.hflip) == (10, 16, 3, True)
    assert first.train.images.shape == (512, 3, 16, 16) and first.test.images.shape == (128, 3, 16, 16)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert set(first.test.labels.tolist()) == set(range(10))
    # Classes are separable: the nearest class centroid classifies the test set well.
    x, y = first.train.images.flatten(1), first.train.labels
    centroids = torch.stack([x[y == k].mean(dim=0) for k in range(10)])
    predicted = torch.cdist(first.test.images.flatten(1), centroids).argmin(dim=1)
    assert (predicted == first.test.labels).float().mean() > 0.9


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_dataset_lives_on_the_requested_device(device: str) -> None:
    data = load_dataset(DataConfig(dataset="synthetic", val_size=12), device=device)
    for split in (data.train, data.val, data.test):
        assert split.images.device.type == device and split.labels.device.type == device


# --- augment_batch --------------------------------------------------------------------------------------

def _images(n: int, size: int = 8, device: str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(n)).to(device, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_augment_keeps_shape_device_dtype(device: str, dtype: torch.dtype) -> None:
    images = _images(10, 32, device, dtype)
    out = augment_batch(images, torch.Generator(device=device).manual_seed(0))
    assert out.shape == images.shape and out.device == images.device and out.dtype == dtype


def test_augment_without_pad_or_flip_is_identity() -> None:
    images = _images(6)
    assert torch.equal(augment_batch(images, torch.Generator().manual_seed(0), pad=0, flip=False), images)


@pytest.mark.parametrize("flip", [True, False])
def test_augment_output_is_a_crop_of_the_padded_image(flip: bool) -> None:
    pad, images = 2, _images(24)
    out = augment_batch(images, torch.Generator().manual_seed(3), pad=pad, flip=flip)
    padded = torch.nn.functional.pad(images, (pad,) * 4)
    h, w = images.shape[-2:]
    choices = list(itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True) if flip else (False,)))

    def crop(i: int, dy: int, dx: int, mirrored: bool) -> torch.Tensor:
        window = padded[i, :, dy:dy + h, dx:dx + w]
        return window.flip(-1) if mirrored else window

    seen = set()
    for i in range(len(images)):
        matches = [choice for choice in choices if torch.equal(out[i], crop(i, *choice))]
        assert matches, f"output image {i} is no crop of its padded input"
        seen.update(matches)
    assert len({(dy, dx) for dy, dx, _ in seen}) > 1
    assert {mirrored for *_, mirrored in seen} == ({False, True} if flip else {False})


def test_augment_offsets_differ_between_images() -> None:
    images = torch.ones(64, 1, 8, 8)  # a crop's zeros show where the offset put the padding
    out = augment_batch(images, torch.Generator().manual_seed(0), pad=4, flip=False)
    zero_rows = (out[:, 0].sum(dim=2) == 0).sum(dim=1)
    zero_cols = (out[:, 0].sum(dim=1) == 0).sum(dim=1)
    assert len(set(zip(zero_rows.tolist(), zero_cols.tolist()))) > 1


def test_augment_is_reproducible_and_resumable() -> None:
    images = _images(32)
    a = torch.Generator().manual_seed(42)
    first, second = augment_batch(images, a), augment_batch(images, a)
    b = torch.Generator().manual_seed(42)
    assert torch.equal(augment_batch(images, b), first)
    resumed = torch.Generator()
    resumed.set_state(b.get_state())  # what a checkpoint stores
    assert torch.equal(augment_batch(images, resumed), second)
    assert not torch.equal(first, second)


def test_the_data_identity_follows_the_files_and_the_split(cifar_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The digest MLflow records: from CIFAR's checksums (no image read) and the split; the source is the folder."""
    from torchvision.datasets import CIFAR10

    from resnet_core.data_identity import data_identity

    config = DataConfig(dataset="cifar10", data_dir=str(cifar_dir))
    identity = data_identity(config)
    assert (identity.name, identity.source_type, identity.source) == ("cifar10", "local", str(cifar_dir))
    assert data_identity(DataConfig(dataset="cifar10", data_dir=str(cifar_dir), val_size=10)).digest != identity.digest
    assert data_identity(DataConfig(dataset="cifar10", data_dir="elsewhere")).digest == identity.digest
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", "0" * 32]])  # other files
    assert data_identity(config).digest != identity.digest


@pytest.mark.parametrize("flip", [False, True])
def test_channels_last_images_augment_to_the_same_values_and_stay_channels_last(flip: bool) -> None:
    # The trainer stores images channels-last for a channels-last model, so a batch needs no layout copy.
    images = torch.randn(6, 3, 16, 16)
    expected = augment_batch(images, torch.Generator().manual_seed(3), pad=4, flip=flip)
    out = augment_batch(images.contiguous(memory_format=torch.channels_last), torch.Generator().manual_seed(3),
                        pad=4, flip=flip)
    assert torch.equal(out, expected)
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
