"""ImageNet input pipeline: ours against the common recipe, images/s per worker count, measured in one run.

Data: generated ImageNet-sized JPEGs (500×375, quality 90, a smooth random scene plus texture, ~100 KB each
like ImageNet's average) in an ImageNet class-folder tree. Both pipelines do the paper's training
augmentation (shorter side random in [256, 480], random 224 crop, flip, PCA lighting, mean subtracted) and
deliver normalised float32 batches of 64 in the main process:

* reference: the common recipe, torchvision ``ImageFolder`` + per-image PIL transforms (``RandomResize`` of
  the whole image, ``RandomCrop``, ``RandomHorizontalFlip``, ``ToTensor``, lighting, ``Normalize``) through a
  ``DataLoader`` with the same workers;
* ours: ``resnet_core.imagenet`` as ``fit`` runs it on a CPU (torchcodec decode, only the crop's region
  resized, lighting + normalisation as one multiply and add, all in the workers).

Also the 10-crop evaluation rate (ours against ``Resize(256)`` + ``TenCrop(224)`` + per-crop ``ToTensor``),
and, single-threaded per image, the decoder/resizer candidates the pipeline was chosen from.

    python bench/imagenet_pipeline.py                      # workers 1 and 2, 384 images per measurement
    python bench/imagenet_pipeline.py --workers 1,2,4 --images 768

Prints images/s of each (wall clock, and per CPU-second of all the processes involved: the per-core rate,
which a shared machine's load barely changes) and the ratios ours / reference (goal on CPU: >= 1.5 per core).
"""

from __future__ import annotations

import argparse
import io
import itertools
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T1
import torchvision.transforms.v2 as T
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_core.imagenet.stream import EpochBatches, EvalImages, TrainImages  # noqa: E402
from resnet_core.imagenet.transforms import EIGVAL, EIGVEC, LIGHTING_STD, MEAN, BatchSteps, train_view  # noqa: E402

BATCH = 64
CPU_STEPS = BatchSteps("paper", torch.device("cpu"))  # in the workers, as ImageNetSource runs them on a CPU
CLASSES = 8


def imagenet_like_jpeg(rng: np.random.Generator) -> bytes:
    """A 500×375 quality-90 JPEG of a smooth random scene with texture (~100 KB, like ImageNet's average)."""
    scene = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize((500, 375), Image.BICUBIC)
    pixels = np.asarray(scene, dtype=np.int16) + rng.integers(-18, 19, (375, 500, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def write_tree(root: Path, images: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(images):
        folder = root / f"n{i % CLASSES:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img_{i}.JPEG"
        path.write_bytes(imagenet_like_jpeg(rng))
        samples.append((str(path), i % CLASSES))
    return sorted(samples)


class Lighting:
    """AlexNet's PCA lighting on one float image in [0, 1] (fb.resnet.torch's), as the common recipe adds it."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        alpha = torch.randn(3) * LIGHTING_STD
        rgb = torch.tensor(EIGVEC) @ (alpha * torch.tensor(EIGVAL))
        return x + rgb.view(3, 1, 1)


def reference_train_transform() -> T.Compose:
    return T.Compose([T.RandomResize(256, 481), T.RandomCrop(224), T.RandomHorizontalFlip(), T.PILToTensor(),
                      T.ToDtype(torch.float32, scale=True), Lighting(), T.Normalize(MEAN, (1.0, 1.0, 1.0))])


def reference_ten_crop() -> T1.Compose:
    """torchvision's documented TenCrop example (the v1 transforms: v2's Lambda sees each crop alone)."""
    return T1.Compose([T1.Resize(256), T1.TenCrop(224),
                       T1.Lambda(lambda crops: torch.stack([T1.ToTensor()(c) for c in crops])),
                       T1.Normalize(MEAN, (1.0, 1.0, 1.0))])


@dataclass(frozen=True)
class Rate:
    wall: float  # images/s
    per_cpu_second: float  # images per CPU-second of the main process and its workers: images/s per busy core


def rate(loader: DataLoader) -> Rate:
    """How fast ``loader`` delivers all its images: wall-clock and per CPU-second. The loader is run to its end,
    so its workers exit and their CPU time (getrusage of the children) counts every image they made; CPU time
    hardly depends on what else the machine runs, which wall time on a shared machine does."""
    before, children, tic = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    images = sum(len(batch[0]) for batch in loader)
    wall = time.perf_counter() - tic
    after, children_after = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(getattr(end, f) - getattr(start, f) for start, end in ((before, after), (children, children_after))
              for f in ("ru_utime", "ru_stime"))
    return Rate(images / wall, images / cpu)


def training_loaders(root: Path, samples: list, workers: int) -> tuple[DataLoader, DataLoader]:
    """(common recipe, ours) over one epoch of ``samples`` in batches of BATCH."""
    common = DataLoader(ImageFolder(str(root), transform=reference_train_transform()), batch_size=BATCH,
                        shuffle=True, num_workers=workers, drop_last=True)
    one_epoch = list(itertools.islice(EpochBatches(len(samples), BATCH, seed=0, start=0), len(samples) // BATCH))
    ours = DataLoader(TrainImages(samples, "paper", 224, seed=0, steps=CPU_STEPS), num_workers=workers,
                      batch_sampler=one_epoch)
    return common, ours


def ten_crop_loaders(root: Path, samples: list, workers: int) -> tuple[DataLoader, DataLoader]:
    common = DataLoader(ImageFolder(str(root), transform=reference_ten_crop()), batch_size=BATCH // 8,
                        num_workers=workers)
    ours = DataLoader(EvalImages(samples, 224, ten_crop=True, steps=CPU_STEPS), batch_size=BATCH // 8,
                      num_workers=workers)
    return common, ours


def decoder_candidates(path: str, repeats: int = 60) -> dict[str, float]:
    """ms per image, one thread, of each way to decode and cut the paper's crop (s = 352, a 224 crop)."""
    import torchvision.io as tio

    data = Path(path).read_bytes()
    scale = 352 / 375
    box = (40 / scale, 30 / scale, 264 / scale, 254 / scale)

    def pil_whole() -> object:
        image = Image.open(io.BytesIO(data)).convert("RGB")
        return image.resize((round(500 * scale), 352), Image.BILINEAR).crop((40, 30, 264, 254))

    def pil_region() -> object:
        return Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BILINEAR, box=box)

    def torchvision_io() -> object:
        x = tio.decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        region = x[:, round(box[1]):round(box[3]), round(box[0]):round(box[2])]
        return T.functional.resize(region, [224, 224], antialias=True)

    def ours() -> object:
        return train_view(path, "paper", 224, np.random.default_rng(0))

    candidates = {"PIL decode + whole-image resize + crop (common)": pil_whole,
                  "PIL decode + region resize (Image.resize(box=...))": pil_region,
                  "torchvision.io decode_jpeg + tensor region resize": torchvision_io,
                  "ours: train_view (torchcodec decode, region resize, flip, draws)": ours}
    try:
        import simplejpeg

        candidates["simplejpeg decode + PIL region resize"] = lambda: Image.fromarray(
            simplejpeg.decode_jpeg(data)).resize((224, 224), Image.BILINEAR, box=box)
    except ImportError:
        pass
    timings = {}
    for name, run in candidates.items():
        run()
        tic = time.perf_counter()
        for _ in range(repeats):
            run()
        timings[name] = (time.perf_counter() - tic) / repeats * 1e3
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--images", type=int, default=384, help="images per measurement (one pass over them)")
    parser.add_argument("--rounds", type=int, default=3, help="alternate reference and ours; report the best")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        samples = write_tree(root, args.images)
        print("decoder / resizer candidates, ms per image, one thread:")
        for name, ms in decoder_candidates(samples[0][0]).items():
            print(f"  {name:66s} {ms:6.2f}")
        print("\n| workers | pipeline | reference images/s (per CPU-s) | ours images/s (per CPU-s) | ratio wall (per CPU-s) |"
              "\n|---|---|---|---|---|")
        for workers in (int(w) for w in args.workers.split(",")):
            for name, loaders in (("training (paper aug)", training_loaders), ("10-crop evaluation", ten_crop_loaders)):
                rounds = [[rate(loader) for loader in loaders(root, samples, workers)] for _ in range(args.rounds)]
                ref = Rate(max(r[0].wall for r in rounds), max(r[0].per_cpu_second for r in rounds))
                ours = Rate(max(r[1].wall for r in rounds), max(r[1].per_cpu_second for r in rounds))
                print(f"| {workers} | {name} | {ref.wall:.0f} ({ref.per_cpu_second:.0f}) | {ours.wall:.0f} "
                      f"({ours.per_cpu_second:.0f}) | **{ours.wall / ref.wall:.2f}×** "
                      f"({ours.per_cpu_second / ref.per_cpu_second:.2f}×) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
