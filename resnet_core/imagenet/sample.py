"""A small, learnable ImageNet-layout JPEG set made from what ships offline: scikit-learn's 8×8 digits.

``python -m resnet_core.imagenet.sample OUT`` writes ``OUT/train/digit_<d>/*.JPEG`` (1 437 images) and
``OUT/val/digit_<d>/*.JPEG`` (360), the same stratified split as the in-memory ``digits`` set. Each digit is
upsampled to a random size (48–112 pixels a side, aspect ratios varied), given random ink and paper colours,
and saved as a quality-90 JPEG: real decoding, resizing and cropping work, about 3 MB in all. Horizontal
flips change a digit, so a net learns it a little more slowly than with the in-memory set, but an
ImageNet-layout ResNet-18 at a reduced resolution learns it on a 2-core CPU in a few minutes:

    python -m resnet_core.imagenet.sample /tmp/digits-imagenet
    python -m resnet_core.train --dataset imagenet --data-dir /tmp/digits-imagenet --depth 18 --width 0.25 \\
        --crop-size 32 --batch-size 32 --iterations 600 --milestones 450,550 --schedule steps --val-size 0 \\
        --eval-every 300 --eval-batch-size 200 --data-workers 1      # 5.5 min: test error 54 % (chance 90 %)

A config says its tree is this set with ``data.generated=digits``; with ``data.download`` as well, a missing tree
is written where ``data.data_dir`` points (``write_missing``: a sweep's driver does it once, before any trial),
as CIFAR is downloaded. A tree with ``data.generated=none`` (ILSVRC-2012, any class-folder tree) is never written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIZES = (48, 112)  # side lengths in pixels


def write_digits_sample(out: str | Path, seed: int = 0) -> Path:
    """Write the digits set in ImageNet's class-folder layout under ``out`` (must not exist yet).

    Written into a temporary folder beside ``out`` and renamed into place: ``out`` is whole or absent, never
    half written, and of two processes writing it at once one wins and the other gets FileExistsError.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} already exists; give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    partial.mkdir()
    try:
        digits = load_digits()
        indices = np.arange(len(digits.target))
        train, val = train_test_split(indices, test_size=360, stratify=digits.target, random_state=0)
        rng = np.random.default_rng(seed)
        for split, chosen in (("train", train), ("val", val)):
            for i in sorted(chosen):
                folder = partial / split / f"digit_{digits.target[i]}"
                folder.mkdir(parents=True, exist_ok=True)
                render(digits.images[i], rng).save(folder / f"digit_{i:04d}.JPEG", quality=90)
        try:
            partial.rename(out)
        except OSError:  # another process put a folder there meanwhile
            raise FileExistsError(f"{str(out)!r} already exists; give a new folder") from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


# The generated ImageNet-layout sets, by their ``data.generated`` name (resnet_core/config.py's GENERATED).
WRITERS: dict[str, Callable[[Path], Path]] = {"digits": write_digits_sample}
CONTENTS = {"digits": "train/ 1437 images, val/ 360, 10 classes"}


def write_missing(generated: str, data_dir: str | os.PathLike) -> bool:
    """Write the generated set ``generated`` into ``data_dir`` when nothing is there (saying so in one line);
    True when this call wrote it. A folder already there is left as it is (the preflight checks it)."""
    out = Path(data_dir).expanduser().resolve()
    if out.exists():
        return False
    print(f"data.generated={generated}: {out} does not exist, so writing the generated {generated} set there "
          f"({CONTENTS[generated]}), once, before training", flush=True)
    try:
        WRITERS[generated](out)
    except FileExistsError:  # written by another process meanwhile
        return False
    return True


def render(digit: np.ndarray, rng: np.random.Generator) -> Image.Image:
    """One 8×8 digit (values 0–16) as an RGB image of a random size, ink and paper colour."""
    gray = Image.fromarray((digit * (255 / 16)).astype(np.uint8), mode="L")
    width, height = (int(v) for v in rng.integers(SIZES[0], SIZES[1] + 1, size=2))
    gray = gray.resize((width, height), Image.BICUBIC)
    paper = tuple(int(v) for v in rng.integers(0, 110, 3))
    ink = tuple(int(v) for v in rng.integers(150, 256, 3))
    return ImageOps.colorize(gray, black=paper, white=ink)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m resnet_core.imagenet.sample", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to create")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sizes and colours")
    args = parser.parse_args(argv)
    try:
        path = write_digits_sample(args.out, args.seed)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote an ImageNet-layout digits set to {path} ({CONTENTS['digits']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
