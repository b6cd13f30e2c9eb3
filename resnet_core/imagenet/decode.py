"""Decode one image file to RGB, whatever ImageNet really holds.

ImageNet's train set has a PNG named ``.JPEG`` (n02105855_2933), 22 CMYK JPEGs and some grayscale ones
(tensorflow/models, build_imagenet_data.py). PIL opens a file by its content, not its name, and converts
every mode to RGB, so all of them load. A file PIL cannot decode completely (truncated, corrupt) raises
``ImageDecodeError`` naming it: PIL refuses truncated files unless ``ImageFile.LOAD_TRUNCATED_IMAGES`` is set,
which nothing here sets.

PIL is the decoder because, once only the crop is resampled, it measured as fast as the alternatives
(docs/benchmarks.md), it can decode a JPEG at a reduced scale (``draft``), and it reads every file above.
Decoding is two steps so that the caller can choose that scale from the image's size: ``open_image`` reads
the header only, ``decode_rgb`` the pixels.
"""

from __future__ import annotations

from PIL import Image, UnidentifiedImageError

_DECODE_ERRORS = (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError)


class ImageDecodeError(RuntimeError):
    """An image file that cannot be decoded (truncated, corrupt, or not an image)."""


def open_image(path: str) -> Image.Image:
    """The image at ``path``, its header read (size, format) and its pixels not yet decoded."""
    try:
        return Image.open(path)
    except _DECODE_ERRORS as error:
        raise ImageDecodeError(f"cannot decode the image {path!r}: {error}") from error


def decode_rgb(image: Image.Image, draft_to: tuple[int, int] | None = None) -> Image.Image:
    """The pixels of an ``open_image`` as RGB. ``draft_to``: decode a JPEG at the smallest DCT scale (1, 1/2,
    1/4, 1/8) whose size is still at least this (PIL's ``draft``): for an image that will be shrunk anyway."""
    try:
        if draft_to is not None and image.format == "JPEG":
            image.draft("RGB", draft_to)
        image.load()  # closes the file (PIL opened it)
        return image if image.mode == "RGB" else image.convert("RGB")
    except _DECODE_ERRORS as error:
        raise ImageDecodeError(f"cannot decode the image {image.filename!r}: {error}") from error


def load_rgb(path: str) -> Image.Image:
    """The whole image at ``path`` as RGB, at full size."""
    return decode_rgb(open_image(path))
