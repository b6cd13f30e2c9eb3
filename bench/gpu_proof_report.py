"""The GPU proof's table: one line per measurement as it ends, and the summary printed after the JSON is written."""

from __future__ import annotations

import json
from typing import Any


def _timings(row: dict[str, Any]) -> str:
    """The columns every training row shares: the warm-up, the timed window by wall clock and CUDA events, memory."""
    gpu = f"{row['timed_gpu_s']:.2f}" if row["timed_gpu_s"] is not None else "n/a"
    memory = f"{row['peak_memory_gib']:.2f}" if row["peak_memory_gib"] is not None else "n/a"
    skips = f"  cudagraph skips {row['cudagraph_skips']}" if row.get("cudagraph_skips") is not None else ""
    return (f" first window {row['first_window_s']:6.1f} s  timed wall {row['timed_wall_s']:.2f} s"
            f" / CUDA events {gpu} s  peak {memory} GiB{skips}")


def format_row(row: dict[str, Any]) -> str:
    """A CIFAR cell: images/s and the 64k-iteration projection against its target (on a GPU)."""
    head = f"ResNet-{row['depth']:<3} {row['precision']:<4} {row['mode']:<15}"
    if "skipped" in row or "error" in row:
        return f"{head} {row.get('skipped') or row['error']}"
    target = row.get("target_min")
    verdict = f" (target {target:.0f}: {'met' if row['full_run_min'] <= target else 'missed'})" if target else ""
    return f"{head} {row['images_per_s']:9.0f} img/s  64k in {row['full_run_min']:7.2f} min{verdict:<17}{_timings(row)}"


def format_resnet50_row(row: dict[str, Any]) -> str:
    """A ResNet-50 cell: images/s at its batch and resolution, and 90 epochs of ImageNet projected."""
    head = (f"ResNet-50  {row['precision']:<4} {row['mode']:<15} batch {row['batch']:>3} at "
            f"{row['resolution']}x{row['resolution']}")
    if "skipped" in row or "error" in row:
        return f"{head} {row.get('skipped') or row['error']}"
    return f"{head} {row['images_per_s']:8.0f} img/s  90 epochs in {row['epochs_90_h']:8.1f} h {_timings(row)}"


def format_decode(name: str, result: dict[str, Any]) -> str:
    if "images_per_s" in result:
        return f"{name:<24} {result['images_per_s']:9.0f} img/s  ({result['ms_per_image']:.2f} ms per image)"
    return f"{name:<24} {result.get('skipped') or result.get('error')}"


def print_summary(report: dict[str, Any]) -> None:
    print("\n== throughput (training images/s; 64k iterations projected at that speed) ==")
    for row in report["throughput"]:
        print(format_row(row))
    for name in ("packing", "packing_mps"):
        section = report.get(name)
        if section is None:
            continue
        print(f"\n== {name}: k processes of ResNet-20 fp32 on one device ==")
        for run in section.get("runs", []):
            shown = (f"{run['aggregate_images_per_s']:9.0f} img/s aggregate, {run.get('vs_one_process', 1):.2f}x one"
                     if "aggregate_images_per_s" in run else run.get("skipped") or run.get("error"))
            print(f"k={run['k']}: {shown}")
        if "skipped" in section or "error" in section:
            print(section.get("skipped") or section.get("error"))
    print("\n== checkpoint round trip ==")
    print(json.dumps(report.get("round_trip"), indent=1))
    print("\n== ResNet-50 step rate (random images held on the device; 90 epochs of 1.28 M images projected) ==")
    for row in report["resnet50_rows"]:
        print(format_resnet50_row(row))
    for name in ("resnet50", "resnet50_graphs"):
        if (why := (report.get(name) or {}).get("skipped") or (report.get(name) or {}).get("error")) is not None:
            print(f"{name}: {why}")
    decode = report.get("jpeg_decode") or {}
    print(f"\n== JPEG decode ({decode.get('images', '?')} images of {decode.get('size', '?')}, quality "
          f"{decode.get('quality', '?')}; CPU on one thread, nvJPEG a whole batch per call) ==")
    if "skipped" in decode or "error" in decode:
        print(decode.get("skipped") or decode.get("error"))
    for name, result in decode.items():
        if isinstance(result, dict):
            print(format_decode(name, result))
    if feed := report.get("input_feed"):
        nvjpeg = [f"{name.removesuffix('_vs_step_rate')} {value:.1f}x" for name, value in feed.items()
                  if name.endswith("_vs_step_rate")]
        gpu = f"; nvJPEG decodes at {', '.join(nvjpeg)} that rate" if nvjpeg else ""
        print(f"feeding ResNet-50 at {feed['resnet50_images_per_s']:.0f} img/s takes {feed['cores_to_feed']:.2f} CPU "
              f"cores of train_view (paper){gpu}")
