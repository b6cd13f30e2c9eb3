"""The opt-in device-decode path (``run.decode=device``): training JPEGs decoded on the training device.

On the default path (``run.decode=workers``) each DataLoader worker decodes a file on the CPU and cuts its crop
(transforms.py). Here a worker only reads the file's bytes and its header (size, colour components, EXIF
orientation) and draws the crop's random numbers with ``transforms.train_draw``: the same draws, from the same
per-(seed, epoch, slot) generator, as a worker that decodes the file, so order and augmentation stay functions
of the seed and the iteration, and a resumed run gets the same batches. The training process then decodes the
whole batch in one call of torchcodec's ``decode_jpeg(list_of_byte_tensors, device=...)`` (torchvision.io's
``decode_jpeg`` is deprecated since 0.29): nvJPEG on a CUDA device (its hardware JPEG engine where the GPU has
one), libjpeg-turbo in the training process on any other device (cpu, which is how CI runs this path; mps
decodes on the CPU and moves the crops). Each image's crop is cut, resized (torchvision's antialiased resize)
and flipped on that device, and ``BatchSteps`` finishes the batch (float, lighting, normalisation) as on the
worker path.

Files nvJPEG cannot take, or should not, are decoded by the CPU decoder instead, decided per file:

* by the header, in the worker, which then decodes the file and cuts the crop exactly as the worker path
  does: anything but an 8-bit baseline, extended or progressive JPEG of 1 or 3 components — ImageNet's PNG
  named ``.JPEG`` and its CMYK JPEGs (4 components; the CPU decoder's CMYK→RGB is the worker path's) —, a
  3-component JPEG coded as RGB rather than YCbCr, a JPEG whose EXIF orientation is not 1 (the decoders rotate
  it, so its header's size is not the image's), and a header that does not parse (a truncated or foreign
  file: the CPU decoder then raises ``ImageDecodeError`` naming it, as on the worker path);
* on a decode error, in the training process: a batch the device decoder rejects is decoded file by file on
  the device, and a file that fails there alone by the CPU decoder (an ``ImageDecodeError`` naming it if that
  fails too).

Grayscale JPEGs (1 component) decode as gray (nvJPEG's native Y output) and are repeated to three channels,
which is what libjpeg's RGB output of a gray file is.

Pixels: on a CPU device both paths run the same decoder and the same resize, so the batches are bit for bit
those of the worker path (tests/test_imagenet_device_decode.py). On a GPU they differ a little: nvJPEG's IDCT
and chroma upsampling are not libjpeg-turbo's, and torchvision resizes a CUDA uint8 image in float32 where the
CPU resize uses fixed-point weights (not measured: no GPU was lent to this work). A GPU run is still a function
of its seed and iteration. Evaluation (centre crop, 10 crops) and the probe batch stay on the worker path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torchcodec.decoders import decode_jpeg

from resnet_core.imagenet.decode import decode_rgb
from resnet_core.imagenet.transforms import cut, train_draw

log = logging.getLogger(__name__)

DEVICE_SOF = (0xC0, 0xC1, 0xC2)  # baseline, extended and progressive Huffman JPEG: what nvJPEG decodes
RGB_COMPONENT_IDS = (82, 71, 66)  # "R", "G", "B": libjpeg reads such a 3-component file as RGB, not YCbCr


@dataclass(frozen=True)
class Header:
    """What a worker learns of a JPEG from its markers: the size, and how the training process decodes it."""

    height: int
    width: int
    kind: str  # "rgb" (3 components, YCbCr) or "gray" (1 component)


def read_header(data: bytes) -> Header | None:
    """The header of the JPEG in ``data``, or None when the device decoder should not take it (not a JPEG, not
    8-bit Huffman with 1 or 3 YCbCr components, EXIF-rotated, or a header that does not parse)."""
    if data[:2] != b"\xff\xd8":
        return None
    i, rotated, adobe_rgb = 2, False, False
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i + 4 : i + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            rotated = rotated or _exif_orientation(segment[6:]) != 1
        elif marker == 0xEE and segment[:5] == b"Adobe" and len(segment) >= 12:
            adobe_rgb = segment[11] == 0  # Adobe's transform flag: 0 = no YCbCr (RGB or CMYK)
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start of frame (not DHT/JPG/DAC)
            return _frame(marker, segment, rotated or adobe_rgb)
        elif marker in (0xD9, 0xDA):  # the end, or a scan, before any frame
            return None
        i += 2 + length
    return None


def _frame(marker: int, segment: bytes, cpu_only: bool) -> Header | None:
    """The header of a start-of-frame segment: precision, height, width, components and their ids."""
    if len(segment) < 6 or cpu_only or marker not in DEVICE_SOF or segment[0] != 8:
        return None
    height, width, components = int.from_bytes(segment[1:3], "big"), int.from_bytes(segment[3:5], "big"), segment[5]
    if height == 0 or width == 0 or len(segment) < 6 + 3 * components:
        return None
    if components == 1:
        return Header(height, width, "gray")
    if components == 3 and tuple(segment[6:15:3]) != RGB_COMPONENT_IDS:
        return Header(height, width, "rgb")
    return None


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag of EXIF's first IFD (1 = as stored; 1 without the tag; 0 if unreadable)."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 0
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for entry in range(ifd + 2, min(len(tiff), ifd + 2 + 12 * count), 12):
        if int.from_bytes(tiff[entry : entry + 2], order) == 0x0112:
            return int.from_bytes(tiff[entry + 8 : entry + 10], order)
    return 1


@dataclass(frozen=True)
class EncodedView:
    """One training image as a worker of the device path returns it."""

    path: str
    label: int
    kind: str  # "rgb" or "gray": decoded in the training process; "cpu": decoded and cut in the worker
    data: bytes  # the file's bytes (empty for "cpu")
    pixels: torch.Tensor | None  # the crop, for "cpu": uint8 3×crop×crop, flipped where the draw said so
    box: tuple[int, int, int, int]  # (y0, x0, y1, x1) in the file's pixels
    flipped: bool
    lighting: torch.Tensor  # α of the PCA lighting


class EncodedImages(TorchDataset):
    """Training items of the device path, addressed like ``stream.TrainImages`` by (image index, epoch, slot):
    the file's bytes and the draws of its crop, or (a file the header sends to the CPU) the crop itself."""

    def __init__(self, samples: list[tuple[str, int]], recipe: str, crop_size: int, seed: int):
        self.samples, self.recipe, self.crop_size, self.seed = samples, recipe, crop_size, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int]) -> EncodedView:
        index, epoch, slot = key
        path, label = self.samples[index]
        rng = np.random.default_rng((self.seed, epoch, slot))
        with open(path, "rb") as file:
            data = file.read()
        header = read_header(data)
        if header is not None:
            draw = train_draw((header.height, header.width), self.recipe, self.crop_size, rng)
            return EncodedView(path, label, header.kind, data, None, draw.box, draw.flipped, draw.lighting)
        image = decode_rgb(_as_tensor(data), path)  # the worker path, on the bytes already read
        draw = train_draw(tuple(image.shape[-2:]), self.recipe, self.crop_size, rng)
        pixels = cut(image, draw.box, self.crop_size, draw.flipped)
        return EncodedView(path, label, "cpu", b"", pixels, draw.box, draw.flipped, draw.lighting)


@dataclass
class EncodedBatch:
    """A batch of ``EncodedView``: the encoded files end to end in one tensor (one shared-memory block from a
    worker rather than one per file)."""

    paths: list[str]
    kinds: list[str]
    data: torch.Tensor  # uint8: every encoded file's bytes, in batch order
    ends: list[int]  # where image i's bytes end in ``data`` (they start where image i-1's end)
    pixels: torch.Tensor  # uint8 k×3×crop×crop: the crops of the "cpu" images, in batch order
    boxes: list[tuple[int, int, int, int]]
    flipped: list[bool]
    lighting: torch.Tensor  # N×3
    labels: torch.Tensor  # N

    def encoded(self, i: int) -> torch.Tensor:
        """Image ``i``'s file bytes, a 1-D uint8 view of ``data``."""
        return self.data[(self.ends[i - 1] if i else 0) : self.ends[i]]


def collate_encoded(views: list[EncodedView]) -> EncodedBatch:
    """The DataLoader's ``collate_fn`` for ``EncodedImages`` (a module-level function: workers pickle it)."""
    ends = np.cumsum([len(v.data) for v in views]).tolist()
    crops = [v.pixels for v in views if v.pixels is not None]
    return EncodedBatch(
        paths=[v.path for v in views], kinds=[v.kind for v in views],
        data=_as_tensor(b"".join(v.data for v in views)), ends=ends,
        pixels=torch.stack(crops) if crops else torch.empty(0, dtype=torch.uint8),
        boxes=[v.box for v in views], flipped=[v.flipped for v in views],
        lighting=torch.stack([v.lighting for v in views]), labels=torch.tensor([v.label for v in views]))


def _as_tensor(data: bytes) -> torch.Tensor:
    """``data`` as a 1-D uint8 tensor (a writable copy: ``torch.frombuffer`` warns on read-only bytes)."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


class DeviceDecoder:
    """Decodes an ``EncodedBatch`` in the training process and cuts its crops: uint8 N×3×crop×crop on ``device``.

    Decoding runs on ``device`` if it is a CUDA device (nvJPEG), on the CPU otherwise.
    """

    def __init__(self, crop_size: int, device: torch.device):
        self.crop_size, self.device = crop_size, device
        self.decode_device = device if device.type == "cuda" else torch.device("cpu")
        # Batches the device decoder rejected, and files it could not decode alone (the CPU decoder took them):
        # each one logged, as a GPU that falls back often is not decoding at its speed.
        self.fallbacks = {"batches": 0, "files": 0}

    def crops(self, batch: EncodedBatch) -> torch.Tensor:
        crops: list[torch.Tensor | None] = [None] * len(batch.kinds)
        for kind, mode in (("rgb", "RGB"), ("gray", "GRAY")):
            index = [i for i, k in enumerate(batch.kinds) if k == kind]
            images = self._decode([batch.encoded(i) for i in index], [batch.paths[i] for i in index], mode)
            for i, image in zip(index, images):  # a gray image (1×H×W) is repeated to 3 channels
                crops[i] = cut(image.expand(3, -1, -1), batch.boxes[i], self.crop_size, batch.flipped[i])
        from_workers = iter(batch.pixels)
        stacked = torch.stack([c if c is not None else next(from_workers).to(self.decode_device) for c in crops])
        return stacked.to(self.device, non_blocking=True)

    def _decode(self, sources: list[torch.Tensor], paths: list[str], mode: str) -> list[torch.Tensor]:
        """The images of ``sources`` in one decoder call; file by file if the decoder rejects the batch.
        Running out of device memory is not a bad file: it is raised, never decoded around."""
        if not sources:
            return []
        try:
            return decode_jpeg(sources, mode=mode, device=self.decode_device)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as exc:
            self.fallbacks["batches"] += 1
            log.warning("the %s decoder rejected a batch of %d files (%s): decoding them one by one (%d batch(es) "
                        "so far)", self.decode_device, len(sources), _first_line(exc), self.fallbacks["batches"])
            return [self._decode_one(source, path, mode) for source, path in zip(sources, paths)]

    def _decode_one(self, source: torch.Tensor, path: str, mode: str) -> torch.Tensor:
        """One file on the decode device, or by the CPU decoder if that fails (an error naming ``path`` if it
        fails too)."""
        try:
            return decode_jpeg(source, mode=mode, device=self.decode_device)
        except torch.OutOfMemoryError:
            raise
        except (RuntimeError, ValueError) as exc:
            self.fallbacks["files"] += 1
            log.warning("the %s decoder could not decode %s (%s): the CPU decoder takes it (%d file(s) so far)",
                        self.decode_device, path, _first_line(exc), self.fallbacks["files"])
            return decode_rgb(source, path).to(self.decode_device)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
