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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIZES = (48, 112)  # side lengths in pixels


def write_digits_sample(out: str | Path, seed: int = 0) -> Path:
    """Write the digits set in ImageNet's class-folder layout under ``out`` (must not exist yet)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{str(out)!r} already exists; give a new folder")
    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, val = train_test_split(indices, test_size=360, stratify=digits.target, random_state=0)
    rng = np.random.default_rng(seed)
    for split, chosen in (("train", train), ("val", val)):
        for i in sorted(chosen):
            folder = out / split / f"digit_{digits.target[i]}"
            folder.mkdir(parents=True, exist_ok=True)
            render(digits.images[i], rng).save(folder / f"digit_{i:04d}.JPEG", quality=90)
    return out


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
    print(f"wrote an ImageNet-layout digits set to {path} (train/ 1437 images, val/ 360, 10 classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
