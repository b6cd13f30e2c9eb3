"""Data sets as tensors on the training device, and the paper's augmentation as batched tensor ops.

Every data set is loaded whole, scaled to [0, 1], and has the per-pixel mean of its training split
subtracted (§4.2: "the per-pixel mean subtracted"; no division by the std). The trainer cuts batches
out of these tensors directly, so there is no DataLoader, no worker process and no PIL on the hot path.

Data sets:
  - ``cifar10`` / ``cifar100``: torchvision's classes. Each file's md5 is checked against torchvision's
    list before anything is unpickled (a pickle runs code on load); a tampered or truncated file raises
    ``DatasetUnavailableError`` naming that file, a missing copy one saying how to provide it. Nothing
    is ever substituted.
  - ``digits``: scikit-learn's 8×8 digits (ships with the package, no network), at their native 8×8 as RGB.
  - ``synthetic``: small generated images with learnable classes, for tests.

ImageNet is not loaded here: it is streamed from its files (resnet_core/imagenet/), through the same ``fit``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .config import DATASETS, DataConfig
from .errors import DatasetUnavailableError  # noqa: F401  (its public home stays data.py)


@dataclass
class Split:
    images: torch.Tensor  # float32, N×C×H×W, per-pixel mean subtracted
    labels: torch.Tensor  # int64, N


@dataclass
class Dataset:
    name: str
    train: Split
    val: Split | None  # held out of the training set when val_size > 0
    test: Split
    num_classes: int
    image_size: int  # H == W
    in_channels: int
    hflip: bool  # whether a horizontal flip keeps an image's label (not for digits)


class _Raw(NamedTuple):
    """A data set as loaded: images uint8 in [0, 255] or float in [0, 1], N×C×H×W, on the CPU."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    hflip: bool


def load_dataset(config: DataConfig, device: torch.device | str = "cpu", seed: int = 0) -> Dataset:
    """Load ``config.dataset`` onto ``device``: split, limited, scaled to [0, 1], mean-subtracted.

    ``seed`` only chooses which training images are held out for validation; test sets never
    depend on it, so errors are comparable across seeds.
    """
    if config.dataset == "imagenet":
        raise ValueError("ImageNet is streamed, not loaded whole: fit opens it (resnet_core.imagenet.stream)")
    if config.dataset not in _LOADERS:
        raise ValueError(f"data.dataset={config.dataset!r} is not valid; choose one of {list(DATASETS)}")
    raw = _LOADERS[config.dataset](config)

    train_images, train_labels = raw.train_images, raw.train_labels
    val = None
    if config.val_size > 0:
        n = len(train_labels)
        if config.val_size >= n:
            raise ValueError(f"data.val_size={config.val_size} must be smaller than the {n} training images "
                             f"of {config.dataset}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        # Sorting keeps both parts in file order, so train_limit below takes the first images of the file.
        val_index, train_index = order[: config.val_size].sort().values, order[config.val_size :].sort().values
        val = (train_images[val_index], train_labels[val_index])
        train_images, train_labels = train_images[train_index], train_labels[train_index]
    if config.train_limit > 0:
        train_images, train_labels = train_images[: config.train_limit], train_labels[: config.train_limit]

    # Move before converting: uint8 is 4× cheaper to transfer than float32.
    train_x = _to_unit_float(train_images, device)
    mean = train_x.mean(dim=0, keepdim=True)  # the mean of the images actually trained on
    train_x.sub_(mean)

    def split(images: torch.Tensor, labels: torch.Tensor) -> Split:
        """Any other split, scaled and centred with the training mean."""
        return Split(_to_unit_float(images, device).sub_(mean), labels.to(device=device, dtype=torch.int64))

    _, channels, height, _ = train_x.shape
    return Dataset(
        name=config.dataset,
        train=Split(train_x, train_labels.to(device=device, dtype=torch.int64)),
        val=split(*val) if val is not None else None,
        test=split(raw.test_images, raw.test_labels),
        num_classes=raw.num_classes,
        image_size=height,
        in_channels=channels,
        hflip=raw.hflip,
    )


def augment_batch(images: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True) -> torch.Tensor:
    """The paper's augmentation on a whole batch: zero-pad, random crop back to size, random h-flip.

    Each image gets its own crop offset in [0, 2·pad] per axis and (when ``flip``) a flip with p = 0.5.
    The zeros of the padding are the mean pixel, since images are mean-subtracted. All randomness comes
    from ``generator`` (on the images' device), so a resumed run draws exactly the same augmentations.

    The crop and the flip are one ``gather``: each output pixel reads one index of the flattened padded
    image. That measured fastest among advanced indexing, two gathers, unfold and a loop over offsets.
    Channels-last images (as the trainer stores them for a channels-last model) are gathered as whole pixels
    and come out channels-last, with the same values: no layout copy per batch.
    """
    n, c, h, w = images.shape
    device = images.device
    dy = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1), generator=generator, device=device)
    rows = dy + torch.arange(h, device=device)  # n×h rows of the padded image
    cols = torch.arange(w, device=device).expand(n, w)
    if flip:
        flipped = torch.randint(0, 2, (n, 1), generator=generator, device=device, dtype=torch.bool)
        cols = torch.where(flipped, cols.flip(1), cols)
    cols = dx + cols  # n×w columns of the padded image

    pixels = (rows[:, :, None] * (w + 2 * pad) + cols[:, None, :]).view(n, h * w)  # into the padded image
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        padded = F.pad(images.permute(0, 2, 3, 1), (0, 0, pad, pad, pad, pad))  # N×H×W×C, a view of the storage
        index = pixels[:, :, None].expand(n, h * w, c)
        return padded.flatten(1, 2).gather(1, index).view(n, h, w, c).permute(0, 3, 1, 2)
    padded = F.pad(images, (pad, pad, pad, pad))
    index = pixels[:, None, :].expand(n, c, h * w)
    return padded.flatten(2).gather(2, index).view(n, c, h, w)


def _to_unit_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """float32 in [0, 1] on ``device``, from uint8 in [0, 255] or float already in [0, 1]."""
    images = images.to(device)
    if images.dtype == torch.uint8:
        return images.to(torch.float32).div_(255)
    return images.to(torch.float32, copy=True)


def _load_cifar10(config: DataConfig) -> _Raw:
    return _load_cifar(*_cifar("cifar10"), config)


def _load_cifar100(config: DataConfig) -> _Raw:
    return _load_cifar(*_cifar("cifar100"), config)


def _cifar(dataset: str) -> tuple[type, str, str]:
    """torchvision's class for a CIFAR data set, its title, and the files it expects (for messages)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    return {"cifar10": (CIFAR10, "CIFAR-10", "data_batch_1..5, test_batch"),
            "cifar100": (CIFAR100, "CIFAR-100", "train, test, meta")}[dataset]


def cifar_checksums(dataset: str) -> list[list[str]]:
    """The published (file, md5) list of a CIFAR data set, as torchvision checks it."""
    cls = _cifar(dataset)[0]
    return sorted([name, md5] for name, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])])


def check_dataset(config: DataConfig) -> None:
    """Verify, without loading it, that ``config.dataset`` is there: every CIFAR file present with its published
    md5 (digits and synthetic data need no files). Raises DatasetUnavailableError saying how to provide it.

    With ``download`` set, missing files are not an error: the run fetches them. ImageNet gets its preflight
    (resnet_core/imagenet/folders.py): layout, labels, counts, every file whole; with ``download`` set (which
    ``config.validate`` allows only for a generated set, ``data.generated``) a missing tree is not an error either:
    ``download_dataset`` writes it.
    """
    if config.dataset == "imagenet":
        from resnet_core.imagenet.folders import preflight

        root = os.path.abspath(os.path.expanduser(config.data_dir))
        if config.download and config.generated != "none" and not os.path.exists(root):
            return
        preflight(root, config.verify_images, config.generated)
        return
    if config.dataset not in ("cifar10", "cifar100"):
        return
    cls, title, expected = _cifar(config.dataset)
    root = os.path.abspath(os.path.expanduser(config.data_dir))
    _verify_cifar_files(cls, title, root, config.download)
    folder = os.path.join(root, cls.base_folder)
    names = [name for name, _ in [*cls.train_list, *cls.test_list]] + [cls.meta["filename"]]
    if not config.download and not all(os.path.isfile(os.path.join(folder, name)) for name in names):
        raise _cifar_missing(cls, title, expected, root, None)


def download_dataset(config: DataConfig) -> None:
    """Fetch a CIFAR data set into ``config.data_dir`` if it is not there (md5-checked), or write a generated
    ImageNet-layout set there (``data.generated``: resnet_core/imagenet/sample.py); nothing for data that needs
    no files, and never anything for a real ImageNet (it needs a licence). A sweep's driver calls it once before any
    trial starts, so that trials sharing the directory do not all download at once. Raises
    DatasetUnavailableError when the download fails."""
    if config.dataset == "imagenet" and config.generated != "none":
        from resnet_core.imagenet.sample import write_missing

        write_missing(config.generated, config.data_dir)
        return
    if config.dataset not in ("cifar10", "cifar100"):
        return
    cls, title, expected = _cifar(config.dataset)
    root = os.path.abspath(os.path.expanduser(config.data_dir))
    _verify_cifar_files(cls, title, root, download=True)
    try:
        cls(root=root, train=True, download=True)
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError) as error:
        raise _cifar_missing(cls, title, expected, root, error) from error


def _cifar_missing(cls: type, title: str, expected: str, root: str, download_error: Exception | None
                   ) -> DatasetUnavailableError:
    reason = f" The download failed: {download_error}." if download_error is not None else ""
    return DatasetUnavailableError(
        f"{title} not found or corrupted under {root!r} (expected {cls.base_folder}/{expected})."
        f"{reason} Download {cls.url} and extract it there, pass --data-dir DIR pointing to where it is, "
        f"or pass --download on a machine with internet.")


def _load_cifar(cls: type, title: str, expected: str, config: DataConfig) -> _Raw:
    """Read CIFAR through torchvision (md5 of every file checked first); never substitute other data."""
    root = os.path.abspath(os.path.expanduser(config.data_dir))
    _verify_cifar_files(cls, title, root, config.download)
    try:
        train = cls(root=root, train=True, download=config.download)
        test = cls(root=root, train=False, download=False)
    # torchvision raises RuntimeError for missing or corrupt files, URLError (an OSError) when offline.
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError) as error:
        raise _cifar_missing(cls, title, expected, root, error if config.download else None) from error
    return _Raw(
        train_images=_hwc_to_chw(train.data),
        train_labels=torch.tensor(train.targets, dtype=torch.int64),
        test_images=_hwc_to_chw(test.data),
        test_labels=torch.tensor(test.targets, dtype=torch.int64),
        num_classes=len(train.classes),
        hflip=True,
    )


def _verify_cifar_files(cls: type, title: str, root: str, download: bool) -> None:
    """Check the md5 of every CIFAR file that is present against torchvision's list, before unpickling.

    torchvision checks the same sums, but its error names no file; missing files are left to the caller's
    "not found" message (or to the download).
    """
    folder = os.path.join(root, cls.base_folder)
    for filename, expected in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            continue
        digest = hashlib.md5(usedforsecurity=False)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != expected:
            fix = ("delete it and run again with --download" if download else
                   f"download {cls.url} again and extract it under {root!r}, or delete it and pass --download")
            raise DatasetUnavailableError(
                f"{title} not found or corrupted under {root!r}: the file {path!r} failed its integrity check "
                f"(md5 {digest.hexdigest()}, expected {expected}); it is truncated or was modified, so it was not "
                f"loaded. Replace it: {fix}.")


def _hwc_to_chw(data: np.ndarray) -> torch.Tensor:
    """torchvision's uint8 N×H×W×C array as a contiguous uint8 N×C×H×W tensor."""
    return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous()


def _load_digits(config: DataConfig) -> _Raw:
    """scikit-learn's 1797 8×8 digits as 8×8 RGB in [0, 1]; a fixed stratified 1437 / 360 split.

    Kept at their native size: upsampling adds no information, and 8×8 makes a CPU smoke sweep ~3× cheaper
    than 16×16 (the CIFAR-layout nets take any size ≥ 8 thanks to global average pooling).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).to(torch.float32).div_(16).unsqueeze(1)  # pixels are 0..16
    images = images.expand(-1, 3, -1, -1).contiguous()  # 3 channels so the CIFAR-layout nets take them
    labels = torch.from_numpy(digits.target).to(torch.int64)
    # A fixed seed, not the run's: every run is tested on the same 360 images.
    train_index, test_index = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=360, stratify=digits.target, random_state=0
    )
    train_index, test_index = torch.from_numpy(train_index).sort().values, torch.from_numpy(test_index).sort().values
    return _Raw(images[train_index], labels[train_index], images[test_index], labels[test_index],
                num_classes=10, hflip=False)


def _load_synthetic(config: DataConfig) -> _Raw:
    """512 train / 128 test 3×16×16 images in 10 classes: a smooth template per class plus noise.

    Templates are smooth (upsampled from 4×4) so that 4-pixel crop shifts keep most of the signal, and
    mirror-symmetric so that a horizontal flip keeps the label. Fixed seed: identical on every call.
    """
    generator = torch.Generator().manual_seed(1234)
    num_classes, size = 10, 16
    coarse = torch.randn(num_classes, 3, 4, 4, generator=generator)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    templates = (templates + templates.flip(-1)) / 2

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % num_classes
        labels = labels[torch.randperm(n, generator=generator)]
        noise = torch.randn(n, 3, size, size, generator=generator)
        images = 0.5 + 0.15 * templates[labels] + 0.1 * noise
        return images.clamp_(0, 1), labels

    train_images, train_labels = make(512)
    test_images, test_labels = make(128)
    return _Raw(train_images, train_labels, test_images, test_labels, num_classes=num_classes, hflip=True)


_LOADERS: dict[str, Callable[[DataConfig], _Raw]] = {
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "digits": _load_digits,
    "synthetic": _load_synthetic,
}
