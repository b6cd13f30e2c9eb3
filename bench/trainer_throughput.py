"""Trainer throughput: our ``fit`` against the common public recipe, measured side by side in one run.

The reference is the loop most CIFAR tutorials use: PIL images through a torchvision ``DataLoader`` with
``RandomCrop(32, 4)`` + ``RandomHorizontalFlip`` + ``ToTensor`` + ``Normalize`` per image, and an NCHW fp32
model of the same architecture. Ours is ``resnet_core.fit`` exactly as the sweeps run it (data on the device,
batched augmentation, channels-last), with its default precision (``auto``: bf16 autocast on CPUs with
AVX512-BF16 or AMX, fp32 elsewhere) and optionally others.

    python bench/trainer_throughput.py                         # ResNet-20 and ResNet-56, batch 128, 32x32
    python bench/trainer_throughput.py --depths 20 --iterations 20 --precisions auto,fp32

Prints training images/s of each and the ratio ours / reference (target on CPU: >= 1.5).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resnet_core import TrainConfig, build_model, fit  # noqa: E402
from resnet_core.data import Dataset, Split  # noqa: E402
from resnet_core.device import resolve_precision  # noqa: E402

IMAGES = 5_000  # CIFAR-shaped random images; content does not change the speed


def cifar_like_uint8(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (IMAGES, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, IMAGES)


class PilDataset(torch.utils.data.Dataset):
    """What torchvision.datasets.CIFAR10 does per item: a PIL image through the transforms."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: T.Compose):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def reference_images_per_sec(depth: int, iterations: int, warmup: int, workers: int) -> float:
    images, labels = cifar_like_uint8()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize((0.491, 0.482, 0.447), (0.247, 0.243, 0.262))])
    loader = torch.utils.data.DataLoader(PilDataset(images, labels, transform), batch_size=128, shuffle=True,
                                         num_workers=workers, drop_last=True, persistent_workers=workers > 0)
    torch.manual_seed(0)
    model = build_model("cifar", depth)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    model.train()
    step, start = 0, None
    while step < warmup + iterations:
        for x, y in loader:
            if step == warmup:
                start = time.perf_counter()
            loss = criterion(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if step == warmup + iterations:
                break
    return iterations * 128 / (time.perf_counter() - start)


def cifar_shaped_dataset(device: str | torch.device = "cpu") -> Dataset:
    """Random CIFAR-shaped images (uint8 pixels scaled and mean-centred as CIFAR's are) held on ``device``.

    For speed measurements without the CIFAR files: the pixel values do not change the arithmetic's cost.
    """
    images, labels = cifar_like_uint8()
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    x, y = (x - x.mean(0)).to(device), torch.from_numpy(labels).to(device)
    return Dataset("random32", Split(x, y), None, Split(x[:256], y[:256]), 10, 32, 3, True)


def ours_images_per_sec(depth: int, iterations: int, warmup: int, precision: str, compile_model: bool) -> float:
    config = TrainConfig().replace(**{
        "model.depth": depth, "run.device": "cpu", "run.precision": precision, "run.compile": compile_model,
        "optim.iterations": warmup + iterations, "optim.milestones": [10**9], "run.eval_every": warmup,
        "run.probe_images": 0})
    results = list(fit(config, dataset=cifar_shaped_dataset()))
    return results[-1].metrics["perf/images_per_sec"]  # the window after warm-up (evaluation time excluded)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--iterations", type=int, default=30, help="timed iterations per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    parser.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    parser.add_argument("--precisions", default="auto,fp32", help="ours: comma-separated run.precision values")
    parser.add_argument("--compile", action="store_true", help="ours: also measure with torch.compile")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 128, 32x32, CPU")
    for depth in (int(d) for d in args.depths.split(",")):
        reference = reference_images_per_sec(depth, args.iterations, args.warmup, args.workers)
        print(f"ResNet-{depth} reference (DataLoader+PIL, NCHW fp32): {reference:8.1f} images/s")
        for precision in args.precisions.split(","):
            for compiled in (False, True) if args.compile else (False,):
                ours = ours_images_per_sec(depth, args.iterations, args.warmup, precision, compiled)
                resolved = resolve_precision(precision, torch.device("cpu"))
                shown = precision if precision == resolved else f"{precision} = {resolved}"
                label = f"ours ({shown}{', compiled' if compiled else ''})"
                print(f"ResNet-{depth} {label:<33}: {ours:8.1f} images/s   ratio {ours / reference:.2f}x")


if __name__ == "__main__":
    main()
