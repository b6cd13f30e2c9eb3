"""Decode one image file to RGB pixels, whatever ImageNet really holds.

ImageNet's train set has a PNG named ``.JPEG`` (n02105855_2933), 22 CMYK JPEGs and some grayscale ones
(tensorflow/models, build_imagenet_data.py). torchcodec's ``decode_image`` reads a file by its content, not
its name, and ``mode="RGB"`` converts every one of those to RGB. A file it cannot decode completely
(truncated, corrupt, not an image) raises ``ImageDecodeError`` naming it.

The decoder is torchcodec's (libjpeg-turbo, libpng): torchvision.io's, which measured fastest for the paper's
crop on ImageNet-sized JPEGs (bench/imagenet_pipeline.py, docs/benchmarks.md), is deprecated since
torchvision 0.29 in favour of it; both give the same pixels at the same speed. It hands back a uint8 C×H×W
tensor, the layout the rest of the pipeline works in, without a copy through PIL and numpy.
"""

from __future__ import annotations

import torch
from torchcodec.decoders import decode_image


class ImageDecodeError(RuntimeError):
    """An image file that cannot be decoded (truncated, corrupt, or not an image)."""


def load_rgb(path: str) -> torch.Tensor:
    """The image at ``path`` as uint8 RGB, 3×H×W."""
    return decode_rgb(path, path)


def decode_rgb(source: str | torch.Tensor, path: str) -> torch.Tensor:
    """The image in ``source`` (a path, or the file's bytes as a 1-D uint8 tensor) as uint8 RGB, 3×H×W; an
    error names ``path``."""
    try:
        return decode_image(source, mode="RGB")
    except (RuntimeError, OSError, ValueError) as error:
        raise ImageDecodeError(f"cannot decode the image {path!r}: {error}") from error
