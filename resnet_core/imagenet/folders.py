"""Find ImageNet on disk as users keep it, list its files and labels, and check them before training.

Three layouts are read (ImageNet needs a licence, so it is never downloaded):

* torchvision's ``datasets.ImageNet`` layout: ``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG`` and ``meta.bin``;
* a plain class-folder tree: ``train/<class>/*``, ``val/<class>/*`` (any class names);
* the official flat ``val/`` of 50 000 files, labelled by the devkit's ground truth as torchvision stores it in
  ``meta.bin`` (its ``val_wnids``: the wnid of each val file in sorted file-name order).

Class index = position of the class folder name in sorted order: torchvision's ``ImageFolder`` order (and
DALI's), so a model trained here labels classes as torchvision's ImageNet models do.

``survey`` counts files per split and class and fingerprints the file list without opening an image;
``verify_files`` checks that every file is a whole JPEG or PNG (its first and last bytes), so a truncated
file is an error naming it before training starts, not a crash hours into an epoch.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

from resnet_core.errors import DatasetUnavailableError

META_FILE = "meta.bin"  # torchvision's name (torchvision.datasets.imagenet.META_FILE)
ILSVRC2012 = {"classes": 1000, "train": 1_281_167, "val": 50_000}
WNID = re.compile(r"n\d{8}")
HOW_TO_GET = ("ImageNet cannot be downloaded for you: it needs a licence. Register at https://image-net.org, "
              "download ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz, and "
              "let torchvision unpack them once: `python -c \"from torchvision.datasets import ImageNet; "
              "ImageNet('DIR', split='train'); ImageNet('DIR', split='val')\"`; then pass --data-dir DIR. "
              "A class-folder tree (train/<class>/, val/<class>/) works too.")


@dataclass(frozen=True)
class ImageNetFiles:
    """Every image of a tree and its label: ``classes[label]`` is the class folder name (a wnid)."""

    root: Path
    layout: str  # "torchvision", "class folders" or "flat val"
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]  # (path, label), in sorted path order
    val: tuple[tuple[str, int], ...]


def find_imagenet(data_dir: str | os.PathLike) -> ImageNetFiles:
    """List ``data_dir``'s train and val images with their labels; a clear error for anything missing."""
    root = Path(data_dir).expanduser().resolve()
    if not root.is_dir():
        raise DatasetUnavailableError(f"ImageNet not found: {str(root)!r} is not a directory. {HOW_TO_GET}")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DatasetUnavailableError(f"ImageNet not found under {str(root)!r}: no {split}/ folder (expected "
                                          f"train/<wnid>/*.JPEG and val/). {HOW_TO_GET}")
    classes, class_to_idx = _class_folders(root / "train")
    train = _labelled_files(root / "train", class_to_idx)
    meta = root / META_FILE
    if _has_subfolders(root / "val"):
        val_classes, _ = _class_folders(root / "val")
        _check_same_classes(root, classes, val_classes)
        val = _labelled_files(root / "val", class_to_idx)
        layout = "torchvision" if meta.is_file() else "class folders"
    else:
        val, layout = _flat_val(root, class_to_idx), "flat val"
    return ImageNetFiles(root, layout, tuple(classes), tuple(train), tuple(val))


def _has_subfolders(folder: Path) -> bool:
    return any(entry.is_dir() for entry in os.scandir(folder))


def _class_folders(folder: Path) -> tuple[list[str], dict[str, int]]:
    """torchvision's ``find_classes`` (sorted folder names), with an error naming the folder."""
    try:
        return find_classes(folder)
    except FileNotFoundError:
        raise DatasetUnavailableError(f"{str(folder)!r} has no class folders (expected one sub-folder per "
                                      f"class, e.g. {folder}/n01440764/*.JPEG)") from None


def _labelled_files(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """torchvision's ``make_dataset``: every image file under the class folders, with its class index."""
    try:
        return make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as error:  # a class folder without images
        raise DatasetUnavailableError(f"under {str(folder)!r}: {error}") from None


def _check_same_classes(root: Path, train: list[str], val: list[str]) -> None:
    if train != val:
        only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
        raise DatasetUnavailableError(
            f"train/ and val/ under {str(root)!r} have different class folders: only in train {only_train[:5]}"
            f"{' …' if len(only_train) > 5 else ''}, only in val {only_val[:5]}{' …' if len(only_val) > 5 else ''}; "
            "both splits must hold the same classes")


def _flat_val(root: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """The official flat val folder, labelled by ``meta.bin``'s ``val_wnids`` (sorted file order)."""
    from torchvision.datasets.imagenet import load_meta_file

    folder = root / "val"
    names = sorted(entry.name for entry in os.scandir(folder)
                   if entry.is_file() and entry.name.lower().endswith(IMG_EXTENSIONS))
    if not (root / META_FILE).is_file():
        raise DatasetUnavailableError(
            f"{str(folder)!r} is a flat folder of {len(names)} images but there is no ground truth: expected "
            f"{root / META_FILE} (written by torchvision from ILSVRC2012_devkit_t12.tar.gz: `python -c \"from "
            f"torchvision.datasets.imagenet import parse_devkit_archive; parse_devkit_archive('{root}')\"`), or "
            "val/<wnid>/ class folders")
    try:
        _, val_wnids = load_meta_file(str(root))
    except Exception as error:  # torch.load of a corrupt or foreign file
        raise DatasetUnavailableError(f"{root / META_FILE} is not torchvision's ImageNet meta file: {error}") from None
    if len(val_wnids) != len(names):
        raise DatasetUnavailableError(f"{root / META_FILE} labels {len(val_wnids)} val images but {str(folder)!r} "
                                      f"holds {len(names)}; the ground truth must list every val file")
    unknown = sorted(set(val_wnids) - set(class_to_idx))
    if unknown:
        raise DatasetUnavailableError(f"{root / META_FILE} labels val images with classes that train/ lacks: "
                                      f"{unknown[:5]}; both splits must hold the same classes")
    return [(str(folder / name), class_to_idx[wnid]) for name, wnid in zip(names, val_wnids)]


# --- the preflight --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Survey:
    """What a tree holds, found without opening an image; ``identity`` is logged as the run's data identity."""

    classes: int
    train: int
    val: int
    min_per_class: int  # training images of the smallest class
    claim: str  # "ILSVRC-2012", "a subset of ILSVRC-2012 (...)" or "a class-folder tree"
    fingerprint: str  # sha256 of the sorted (split, relative path, label) list, 16 hex digits

    def identity(self) -> dict[str, str]:
        return {"data.fingerprint": self.fingerprint, "data.claim": self.claim, "data.classes": str(self.classes),
                "data.train_images": str(self.train), "data.val_images": str(self.val)}


def survey(files: ImageNetFiles) -> Survey:
    """Counts per split and class, whether the tree is (a subset of) ILSVRC-2012, and a fingerprint."""
    per_class = Counter(label for _, label in files.train)
    missing = [files.classes[i] for i in range(len(files.classes)) if per_class[i] == 0]
    if missing:
        raise DatasetUnavailableError(f"class folder(s) {missing[:5]} under {files.root / 'train'} hold no image")
    digest = hashlib.sha256()
    for split, samples in (("train", files.train), ("val", files.val)):
        for path, label in samples:
            digest.update(f"{split}\t{os.path.relpath(path, files.root)}\t{label}\n".encode())
    counts = {"classes": len(files.classes), "train": len(files.train), "val": len(files.val)}
    return Survey(counts["classes"], counts["train"], counts["val"], min(per_class.values()),
                  _claim(files, counts), digest.hexdigest()[:16])


def _claim(files: ImageNetFiles, counts: dict[str, int]) -> str:
    """ILSVRC-2012 when the tree says so (a meta.bin, or wnid class names) and has its exact counts; a subset
    of it otherwise; an error when it holds more than ILSVRC-2012 has (a mixed-up tree)."""
    if not ((files.root / META_FILE).is_file() or all(WNID.fullmatch(c) for c in files.classes)):
        return "a class-folder tree"
    if counts == ILSVRC2012:
        return "ILSVRC-2012"
    over = {k: v for k, v in counts.items() if v > ILSVRC2012[k]}
    if over:
        raise DatasetUnavailableError(f"{str(files.root)!r} looks like ILSVRC-2012 (wnid classes) but holds more "
                                      f"than it has: {over}, expected at most {ILSVRC2012}")
    return (f"a subset of ILSVRC-2012 ({counts['classes']}/1000 classes, {counts['train']}/1281167 train, "
            f"{counts['val']}/50000 val)")


def verify_files(files: ImageNetFiles, threads: int = 8) -> None:
    """Check that every file is a whole JPEG or PNG by its first and last bytes (no decoding; ~1 KiB read per
    file); raise DatasetUnavailableError naming the first bad one."""
    paths = [path for path, _ in (*files.train, *files.val)]
    with ThreadPoolExecutor(threads) as pool:
        for path, problem in zip(paths, pool.map(file_problem, paths, chunksize=256)):
            if problem:
                raise DatasetUnavailableError(f"unreadable image {path!r}: {problem}; replace or delete it")


def file_problem(path: str) -> str | None:
    """Why ``path`` is not a whole JPEG or PNG, or None. JPEGs end with the EOI marker, PNGs with an IEND
    chunk; a few trailing bytes after them are allowed (some cameras write them)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, os.fstat(f.fileno()).st_size - 1024))
            tail = f.read()
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if head[:3] == b"\xff\xd8\xff":
        return None if b"\xff\xd9" in tail else "truncated JPEG (no end-of-image marker)"
    if head == b"\x89PNG\r\n\x1a\n":
        return None if b"IEND" in tail else "truncated PNG (no IEND chunk)"
    return "neither a JPEG nor a PNG"


def preflight(data_dir: str | os.PathLike, verify_images: str = "ends", generated: str = "none"
              ) -> tuple[ImageNetFiles, Survey]:
    """Everything checked before training: the tree's layout and labels, its survey, and (``verify_images=
    "ends"``) every file whole. Raises DatasetUnavailableError naming the path and what was expected: for a
    missing tree that is a generated set (``generated``, ``data.generated``), how to write it, not ImageNet's
    licence."""
    root = Path(data_dir).expanduser().resolve()
    if generated != "none" and not root.exists():
        raise DatasetUnavailableError(
            f"the generated {generated} set (data.generated={generated}) is not under {str(root)!r}: write it with "
            f"`python -m resnet_core.imagenet.sample {root}`, or pass --download to have it written there")
    files = find_imagenet(root)
    summary = survey(files)
    if verify_images == "ends":
        verify_files(files)
    return files, summary
