"""The GPU proof's measuring tools: how much it runs (``Sizes``), the time guard, one training run through
``resnet_core.fit`` timed three ways, a loop over such runs, and the runner that records each section.

bench/gpu_proof.py puts them together; every section module measures with these.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch._dynamo.utils import counters

from resnet_core import TrainConfig, fit
from resnet_core.device import resolve_precision


@dataclass(frozen=True)
class Sizes:
    """How much each measurement runs: ``window`` iterations warm up, then ``window`` are timed."""

    batch: int
    window: int
    depths: tuple[int, ...]
    packing: tuple[int, ...]
    graph_cells: int  # how many CUDA-graph cells at most (the time guard may allow fewer)
    compile_estimate_s: float  # what one compiled cell costs at least; not started with less left
    # ResNet-50 on random ImageNet-shaped images: the batch, the square resolution, the iterations per window
    # (one warms up, one is timed, as above), and whether a CUDA-graph cell is tried at the end
    imagenet_batch: int
    imagenet_resolution: int
    imagenet_window: int
    imagenet_graphs: bool
    jpegs: int  # ImageNet-sized JPEGs (500x375, quality 90) decoded in each timed round


class TimeGuard(Exception):
    """The budget is spent: stop and report what was measured."""


class Deadline:
    """The run's time budget; ``left()`` seconds remain. SIGALRM raises TimeGuard at the end, mid-measurement."""

    def __init__(self, budget_s: float):
        self.end = time.monotonic() + budget_s
        signal.signal(signal.SIGALRM, self._expired)
        signal.alarm(max(1, int(budget_s)))

    def left(self) -> float:
        return self.end - time.monotonic()

    @staticmethod
    def _expired(signum: int, frame: Any) -> None:
        raise TimeGuard("the time guard stopped this measurement")


class GpuClock:
    """The GPU time between two points of the host's program, by CUDA events (None on a CPU)."""

    def __init__(self, device: torch.device):
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if device.type == "cuda" else None

    def mark(self, index: int) -> None:
        if self.events:
            self.events[index].record()

    def seconds(self) -> float | None:
        if not self.events:
            return None
        self.events[1].synchronize()
        return self.events[0].elapsed_time(self.events[1]) / 1000


def measure(config: TrainConfig, dataset: Any) -> dict[str, Any]:
    """Train ``config``: the first window warms up (and compiles), the second is timed by fit (training only),
    by the wall clock and by CUDA events (both including the short evaluation at its end)."""
    device = torch.device(config.run.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    counters.clear()
    clock, start = GpuClock(device), time.perf_counter()
    results = fit(config, dataset=dataset)
    next(results)
    first_s = time.perf_counter() - start
    clock.mark(0)
    tic = time.perf_counter()
    last = list(results)[-1]
    clock.mark(1)
    gpu_s = clock.seconds()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall_s = time.perf_counter() - tic
    return {"images_per_s": last.metrics["perf/images_per_sec"], "first_window_s": first_s, "timed_wall_s": wall_s,
            "timed_gpu_s": gpu_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "precision_used": resolve_precision(config.run.precision, device), "device": device.type,
            # Inductor's count of graphs it could not capture in CUDA graphs (they ran without): 0 is the proof.
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"] if config.run.compile else None}


def measure_rows(jobs: list[tuple[dict[str, Any], TrainConfig]], dataset: Any, deadline: Deadline, needed_s: float,
                 rows: list[dict], project: Callable[[float, TrainConfig], dict[str, Any]],
                 show: Callable[[dict[str, Any]], str]) -> dict[str, int]:
    """Measure each (row head, config) of ``jobs`` on ``dataset`` while the guard leaves ``needed_s``: each row is
    appended to ``rows`` as it ends (a failure records its error and the next runs), with ``project``'s projection
    from its images/s, and printed by ``show``. Returns how many were measured and how many not."""
    first = len(rows)
    for head, config in jobs:
        row = dict(head)
        if deadline.left() < needed_s:
            rows.append({**row, "skipped": "time guard"})
            continue
        try:
            row.update(measure(config, dataset))
            row.update(project(row["images_per_s"], config))
        except TimeGuard:
            rows.append({**row, "skipped": "time guard (stopped while measuring)"})
            raise
        except Exception as exc:  # noqa: BLE001 -- recorded; the next row runs
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        rows.append(row)
        print(show(row), flush=True)
    measured = sum("images_per_s" in row for row in rows[first:])
    return {"measured": measured, "not_measured": len(rows) - first - measured}


def section(report: dict[str, Any], name: str, work: Callable[[], Any]) -> None:
    """Run one section into ``report[name]``; an error is recorded and the next section runs (not the guard)."""
    start = time.perf_counter()
    try:
        report[name] = work()
    except TimeGuard:
        report[name] = {"skipped": "time guard"}
        raise
    except Exception as exc:  # noqa: BLE001
        report[name] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    report["seconds"][name] = round(time.perf_counter() - start, 1)
    print(f"[{name}: {report['seconds'][name]} s]", flush=True)
