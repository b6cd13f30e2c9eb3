"""A tiny ImageNet tree in the layouts users keep it in, with the dirty files ImageNet really has: the tests'
only ImageNet, since the real one needs a licence.

Images are of varied sizes, each class a colour plus noise (so a net can tell them apart); class 0's training
folder also holds a PNG named ``.JPEG``, a CMYK JPEG and a grayscale JPEG (ImageNet has all three).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

WNIDS = ("n01440764", "n01443537", "n01484850")  # the first three ILSVRC-2012 classes, sorted
LAYOUTS = ("torchvision", "class folders", "flat val")
DIRTY = {"png": "n01440764_png.JPEG", "cmyk": "n01440764_cmyk.JPEG", "gray": "n01440764_gray.JPEG"}


def class_image(label: int, rng: np.random.Generator) -> Image.Image:
    """An RGB image of a random size (40–150 pixels a side) in class ``label``'s colour, plus noise."""
    width, height = (int(v) for v in rng.integers(40, 151, size=2))
    colour = np.zeros(3)
    colour[label % 3] = 200.0
    pixels = colour + rng.normal(0, 25, size=(height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def write_imagenet(root: Path, layout: str = "torchvision", train_per_class: int = 6, val_per_class: int = 2,
                   seed: int = 0) -> Path:
    """Write the tree under ``root``: ``train/<wnid>/``, and ``val/<wnid>/`` (``torchvision``: with ``meta.bin``;
    ``class folders``: without) or a flat ``val/`` labelled by ``meta.bin`` (``flat val``)."""
    rng = np.random.default_rng(seed)
    val_wnids: list[str] = []
    for label, wnid in enumerate(WNIDS):
        folder = root / "train" / wnid
        folder.mkdir(parents=True)
        for i in range(train_per_class):
            class_image(label, rng).save(folder / f"{wnid}_{i}.JPEG", quality=90)
        for i in range(val_per_class):
            number = len(val_wnids) + 1  # official val names are numbered across classes
            name = f"ILSVRC2012_val_{number:08d}.JPEG"
            target = root / "val" / name if layout == "flat val" else root / "val" / wnid / name
            target.parent.mkdir(parents=True, exist_ok=True)
            class_image(label, rng).save(target, quality=90)
            val_wnids.append(wnid)
    _write_dirty_files(root / "train" / WNIDS[0], rng)
    if layout != "class folders":
        # torchvision's meta.bin: (wnid -> class names, the wnid of each val file in sorted name order).
        torch.save(({wnid: (f"class {wnid}",) for wnid in WNIDS}, val_wnids), root / "meta.bin")
    return root


def _write_dirty_files(folder: Path, rng: np.random.Generator) -> None:
    """A PNG named .JPEG, a CMYK JPEG and a grayscale JPEG, all of class 0."""
    class_image(0, rng).save(folder / DIRTY["png"], format="PNG")
    class_image(0, rng).convert("CMYK").save(folder / DIRTY["cmyk"], format="JPEG", quality=90)
    class_image(0, rng).convert("L").save(folder / DIRTY["gray"], format="JPEG", quality=90)


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut ``path`` to a fraction of its bytes, as an interrupted copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path
