"""The two ImageNet input recipes: what a worker does to one file, and what is then done to a whole batch.

A worker decodes a file, cuts its crop and flips it (work on a few uint8 pixels); it returns them with the
random numbers of the lighting. The float conversion, lighting and normalisation then run once per batch
(``BatchSteps``), as one multiply and one add per pixel, in place: on a GPU run on the device, so that uint8 crosses the PCIe
bus rather than 4× as many float32 bytes; on a CPU run in the worker, one image at a time, since the
training process is busy with the model there (stream.py's ``TrainImages`` says why per image). Measured on CPU: a batched flip (a
``where`` over the batch) cost more than decoding an image, so the worker flips the crop.

* ``paper`` (§3.4): the shorter side resized to a random s in [256, 480], a random 224×224 crop, a random
  horizontal flip, AlexNet's PCA lighting (fb.resnet.torch's constants, pixels in [0, 1], α ~ N(0, 0.1)), the
  mean subtracted. The paper subtracts the per-pixel mean; over random crops of ImageNet that mean is flat, so
  the channel mean (torchvision's constants) stands for it, and no division by the std.
* ``torchvision``: ``RandomResizedCrop(224)`` + flip, mean/std normalisation (pytorch/vision references).

Both evaluate on the centre 224 crop of the image resized to a shorter side of 256, or on its 10 crops
(4 corners + centre, of the image and of its flip). Every size scales with ``crop_size`` (256/224, 480/224),
so a small crop size gives the same recipe at a reduced resolution.

Speed: the image is never resized whole for training: only the crop's region is cut (to the nearest
pixel of the file) and resized, with torchvision's antialiased uint8 resize (about half the cost of resizing
the whole image first: bench/imagenet_pipeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.transforms.v2 import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from resnet_core.imagenet.decode import load_rgb

RECIPES = ("paper", "torchvision")
MEAN = (0.485, 0.456, 0.406)  # ImageNet's channel means in [0, 1] (torchvision's)
STD = (0.229, 0.224, 0.225)
# AlexNet's PCA lighting, as fb.resnet.torch has it (pixels in [0, 1]); rows of EIGVEC are R, G, B.
EIGVAL = (0.2175, 0.0188, 0.0045)
EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
LIGHTING_STD = 0.1
SCALE_RANGE = (256, 480)  # the paper's shorter side, for a 224 crop
TEST_SIZE = 256  # the shorter side at test time, for a 224 crop


def scaled(size: int, crop_size: int) -> int:
    """A size of the 224-pixel recipe at another crop size."""
    return round(size * crop_size / 224)


@dataclass(frozen=True)
class TrainView:
    """One training crop as a worker returns it: pixels and the random numbers of the batched steps."""

    pixels: torch.Tensor  # uint8, 3×crop×crop, already flipped where the draw said so
    flipped: bool
    lighting: torch.Tensor  # α of the PCA lighting, 3 values (zeros for the torchvision recipe)


@dataclass(frozen=True)
class TrainDraw:
    """Every random choice of one training crop, drawn from the image's size alone (no pixel is needed)."""

    box: tuple[int, int, int, int]  # (y0, x0, y1, x1): the region of the file's pixels that becomes the crop
    flipped: bool
    lighting: torch.Tensor  # α of the PCA lighting, 3 values (zeros for the torchvision recipe)


def train_view(path: str, recipe: str, crop_size: int, rng: np.random.Generator) -> TrainView:
    """The recipe's random crop of the image at ``path``, flipped or not, every random choice drawn from ``rng``."""
    image = load_rgb(path)
    draw = train_draw(tuple(image.shape[-2:]), recipe, crop_size, rng)
    return TrainView(cut(image, draw.box, crop_size, draw.flipped), draw.flipped, draw.lighting)


def train_draw(size: tuple[int, int], recipe: str, crop_size: int, rng: np.random.Generator) -> TrainDraw:
    """The draws of ``train_view`` for an image of ``size`` (H, W), in the same order from ``rng``: a worker
    that only reads a file's header (device_decode.py) draws exactly what a worker decoding it would."""
    if recipe == "paper":
        box = _random_scale_box(size, crop_size, rng)
        lighting = torch.from_numpy(rng.normal(0.0, LIGHTING_STD, 3).astype(np.float32))
    else:
        box = _random_resized_box(size, rng)
        lighting = torch.zeros(3)
    return TrainDraw(box, bool(rng.random() < 0.5), lighting)


def cut(image: torch.Tensor, box: tuple[int, int, int, int], crop_size: int, flipped: bool) -> torch.Tensor:
    """The region ``box`` of ``image`` resized to crop×crop (antialiased, on the image's device), flipped or not."""
    y0, x0, y1, x1 = box
    crop = TF.resize(image[:, y0:y1, x0:x1], [crop_size, crop_size], antialias=True)
    return (crop.flip(-1) if flipped else crop).contiguous()


def _random_scale_box(size: tuple[int, int], crop_size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """Shorter side to a random s in the scaled [256, 480], then a random crop: only the crop is resampled."""
    low, high = (scaled(s, crop_size) for s in SCALE_RANGE)
    resized = _shorter_side(size, int(rng.integers(low, high + 1)), crop_size)
    top = int(rng.integers(0, resized[0] - crop_size + 1))
    left = int(rng.integers(0, resized[1] - crop_size + 1))
    return source_box(size, resized, (top, left, crop_size, crop_size))


def _random_resized_box(size: tuple[int, int], rng: np.random.Generator) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop (scale 0.08–1, ratio 3/4–4/3), its draws seeded from ``rng``."""
    shape_only = torch.empty((), dtype=torch.uint8).expand(3, *size)  # get_params reads the size alone
    with torch.random.fork_rng(devices=()):
        torch.manual_seed(int(rng.integers(0, 2**62)))
        top, left, height, width = RandomResizedCrop.get_params(shape_only, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
    return top, left, top + height, left + width


def source_box(size: tuple[int, int], resized: tuple[int, int],
               region: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """``region`` = (top, left, height, width), in the coordinates of an image of ``size`` (H, W) resized to
    ``resized`` (H, W), as (y0, x0, y1, x1) in the image's own pixels (to the nearest pixel)."""
    fy, fx = size[0] / resized[0], size[1] / resized[1]
    top, left, height, width = region
    y0, x0 = round(top * fy), round(left * fx)
    return y0, x0, max(y0 + 1, round((top + height) * fy)), max(x0 + 1, round((left + width) * fx))


def resample_region(image: torch.Tensor, resized: tuple[int, int], region: tuple[int, int, int, int]) -> torch.Tensor:
    """``region`` = (top, left, height, width), in the coordinates of ``image`` resized to ``resized`` (H, W),
    cut from the image at its own size (to the nearest pixel) and resized alone: the whole image never is."""
    box = source_box(tuple(image.shape[-2:]), resized, region)
    return TF.resize(image[:, box[0]:box[2], box[1]:box[3]], list(region[2:]), antialias=True)


def centre_view(path: str, crop_size: int) -> torch.Tensor:
    """The centre crop of the image resized to a shorter side of 256 (scaled): uint8 3×crop×crop."""
    image = load_rgb(path)
    resized = _shorter_side(image.shape[-2:], scaled(TEST_SIZE, crop_size), crop_size)
    top, left = (resized[0] - crop_size) // 2, (resized[1] - crop_size) // 2
    return resample_region(image, resized, (top, left, crop_size, crop_size))


def ten_crop_view(path: str, crop_size: int) -> torch.Tensor:
    """The 10 crops of §3.4's testing (torchvision's ``TenCrop``): uint8 10×3×crop×crop."""
    image = load_rgb(path)
    resized = TF.resize(image, list(_shorter_side(image.shape[-2:], scaled(TEST_SIZE, crop_size), crop_size)),
                        antialias=True)
    return torch.stack(TF.ten_crop(resized, [crop_size, crop_size]))


def _shorter_side(size: tuple[int, int], side: int, crop_size: int) -> tuple[int, int]:
    """(H, W) of an image of ``size`` (H, W) resized to a shorter side of ``side`` (never below the crop)."""
    height, width = size
    scale = side / min(height, width)
    return max(crop_size, round(height * scale)), max(crop_size, round(width * scale))


class BatchSteps:
    """The recipe's batched steps: uint8 → float, the lighting, the normalisation, as a multiply and an add per
    pixel: x = pixels · 1/(255 σ) + (rgb − μ) / σ, with rgb the PCA lighting's shift (zero at test time)."""

    def __init__(self, recipe: str, device: torch.device):
        self.mean = torch.tensor(MEAN, device=device)
        self.std = torch.tensor(STD if recipe == "torchvision" else (1.0, 1.0, 1.0), device=device)
        self.scale = (1.0 / (255.0 * self.std)).view(1, 3, 1, 1)
        self.eigvec = torch.tensor(EIGVEC, device=device)
        self.eigval = torch.tensor(EIGVAL, device=device)
        self.device = device

    def finish(self, pixels: torch.Tensor, lighting: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 N×3×H×W (or N×V×3×H×W: views; or 3×H×W: one image) → normalised float32 on ``device``; ``lighting`` (N×3) holds
        each image's α: its shift is rgb_c = Σ_j V[c, j] α_j λ_j (AlexNet's, as fb.resnet.torch adds it)."""
        if pixels.dim() == 3:  # one image
            return self.finish(pixels[None], lighting)[0]
        x = pixels.to(self.device, non_blocking=True)
        rgb = torch.zeros(1, 3, device=self.device)
        if lighting is not None:
            rgb = (lighting.to(self.device) * self.eigval) @ self.eigvec.T
        offset, scale = ((rgb - self.mean) / self.std).view(-1, 3, 1, 1), self.scale
        if x.dim() == 5:
            offset, scale = offset[:, None], scale[:, None]
        return x.float().mul_(scale).add_(offset)  # in place: a second 4-byte-per-pixel buffer would cost more
