"""The GPU proof's JPEG decode section: how fast ImageNet-sized JPEGs decode on one CPU thread and, on a CUDA device,
with nvJPEG on the GPU (a whole batch per call), beside the project's own per-image training view (decode, crop,
resize, flip: resnet_core/imagenet/transforms.py's ``train_view``). Against the ResNet-50 step rate, it says how
many CPU cores feed one GPU, or whether the GPU must decode.

Each measurement is recorded on its own: a decoder that is not installed (torchcodec may be missing on a machine
with only torch and torchvision) records its error and the next one runs.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.gpu_proof_measure import Deadline

WIDTH, HEIGHT, QUALITY = 500, 375, 90  # ImageNet's typical size; about 66 KB each (ImageNet averages about 110 KB)
ROUNDS = 3  # timed passes over the images; the fastest counts (a shared machine slows some)
CROP = 224


def imagenet_like_jpeg(rng: np.random.Generator) -> bytes:
    """A 500x375 quality-90 JPEG of a smooth random scene with texture: bench/imagenet_pipeline.py's images (not
    imported from there: that module needs torchcodec, which a machine with only torch and torchvision lacks)."""
    scene = Image.fromarray((rng.random((6, 8, 3)) * 255).astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    pixels = np.asarray(scene, dtype=np.int16) + rng.integers(-18, 19, (HEIGHT, WIDTH, 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=QUALITY)
    return buffer.getvalue()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one CPU thread inside (resizes and conversions), as one decoding worker runs."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def images_per_s(work: Callable[[], Any], count: int, finish: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """``count`` images per call of ``work``: one untimed call (allocations, decoder handles), then the fastest of
    ROUNDS timed calls, each ended by ``finish`` (a device synchronisation)."""
    work()
    finish()
    best = math.inf
    for _ in range(ROUNDS):
        tic = time.perf_counter()
        work()
        finish()
        best = min(best, time.perf_counter() - tic)
    return {"images_per_s": count / best, "ms_per_image": best / count * 1e3}


def attempt(measurement: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One measurement, or its error (the next one runs); the time guard is not caught."""
    try:
        return measurement()
    except Exception as exc:  # noqa: BLE001 -- recorded
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}


def cpu_decoders(encoded: list[torch.Tensor], paths: list[Path]) -> dict[str, dict[str, Any]]:
    """Decode to RGB on one thread: torchcodec (what the pipeline uses), torchvision.io (deprecated since 0.29, the
    same libjpeg-turbo), and ``train_view`` per file, the paper's and torchvision's recipe (decode, crop, resize,
    flip; what one data worker does per image, reading the file from the page cache)."""
    n = len(encoded)

    def torchcodec() -> dict[str, Any]:
        from torchcodec.decoders import decode_jpeg

        return images_per_s(lambda: [decode_jpeg(data, mode="RGB") for data in encoded], n)

    def torchvision_io() -> dict[str, Any]:
        from torchvision.io import ImageReadMode, decode_jpeg

        return images_per_s(lambda: [decode_jpeg(data, mode=ImageReadMode.RGB) for data in encoded], n)

    def view(recipe: str) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            from resnet_core.imagenet.transforms import train_view

            rng = np.random.default_rng(0)
            return images_per_s(lambda: [train_view(str(path), recipe, CROP, rng) for path in paths], n)
        return run

    with one_thread():
        return {"cpu_torchcodec": attempt(torchcodec), "cpu_torchvision_io": attempt(torchvision_io),
                "train_view_paper": attempt(view("paper")), "train_view_torchvision": attempt(view("torchvision"))}


def gpu_decoders(encoded: list[torch.Tensor], device: torch.device) -> dict[str, dict[str, Any]]:
    """nvJPEG: the whole list of encoded images in one call (the bytes cross to the device inside it), by
    torchvision.io and by torchcodec; on a CPU device, skipped with the reason."""
    names = ("nvjpeg_torchvision_io", "nvjpeg_torchcodec")
    if device.type != "cuda":
        return {name: {"skipped": f"no CUDA device ({device.type}): nvJPEG decodes on an NVIDIA GPU only"}
                for name in names}

    def sync() -> None:
        torch.cuda.synchronize(device)

    def torchvision_io() -> dict[str, Any]:
        from torchvision.io import ImageReadMode, decode_jpeg

        return images_per_s(lambda: decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device), len(encoded), sync)

    def torchcodec() -> dict[str, Any]:
        from torchcodec.decoders import decode_jpeg

        return images_per_s(lambda: decode_jpeg(encoded, mode="RGB", device=device), len(encoded), sync)

    return {names[0]: attempt(torchvision_io), names[1]: attempt(torchcodec)}


def jpeg_decode(device: torch.device, count: int, deadline: Deadline) -> dict[str, Any]:
    """Write ``count`` ImageNet-sized JPEGs to a temporary directory, then measure each decoder on them."""
    if deadline.left() < 20:
        return {"skipped": "time guard"}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"img_{i}.JPEG" for i in range(count)]
        for path in paths:
            path.write_bytes(imagenet_like_jpeg(rng))
        encoded = [torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8) for path in paths]
        record: dict[str, Any] = {"images": count, "size": f"{WIDTH}x{HEIGHT}", "quality": QUALITY,
                                  "mean_kb": sum(len(e) for e in encoded) / count / 1024, "rounds": ROUNDS,
                                  "crop": CROP, "cpu_threads": 1}
        record.update(cpu_decoders(encoded, paths))
        record.update(gpu_decoders(encoded, device))
    return record


def input_feed(decode: dict[str, Any], resnet50_rows: list[dict]) -> dict[str, Any] | None:
    """CPU cores of ``train_view`` (paper's recipe) that the fastest measured ResNet-50 eager step rate needs, and how
    many times that rate nvJPEG decodes at (decode alone): None unless both were measured."""
    view = decode.get("train_view_paper", {}).get("images_per_s")
    steps = [row["images_per_s"] for row in resnet50_rows if "images_per_s" in row]
    if not view or not steps:
        return None
    feed = {"resnet50_images_per_s": max(steps), "train_view_images_per_s_per_core": view,
            "cores_to_feed": max(steps) / view}
    for name in ("nvjpeg_torchvision_io", "nvjpeg_torchcodec"):
        if rate := decode.get(name, {}).get("images_per_s"):
            feed[f"{name}_vs_step_rate"] = rate / max(steps)
    return feed
