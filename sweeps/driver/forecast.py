"""The sweep's expected cost and finish time: before it starts, from the bench figures (``planned_line``, what
--plan-only prints), and once after its first evaluations, from its own pace. Driver only.

Each running trial's seconds per iteration are measured between its first and its latest evaluation (the first
one includes start-up). A trial not started yet is assumed to cost what the measured ones cost per iteration
and layer, times its depth: rough, and said to be.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ray import tune

from resnet_core import TrainConfig
from sweeps.trial.identity import trial_config
from sweeps.trial.progress import ITERATION


@dataclass
class TrialPace:
    """What is known of one trial's speed: its budget, its depth, and two of its evaluations."""

    iterations: int  # its whole budget
    depth: int
    first: tuple[int, float] | None = None  # (iteration, seconds of training) at its first evaluation
    latest: tuple[int, float] | None = None
    done: bool = False

    @property
    def seconds_per_iteration(self) -> float | None:
        if self.first is None or self.latest is None or self.latest[0] <= self.first[0]:
            return None
        return (self.latest[1] - self.first[1]) / (self.latest[0] - self.first[0])


def remaining_seconds(paces: list[TrialPace]) -> tuple[float, float] | None:
    """(trial-seconds spent, trial-seconds left) over the sweep; None until some trial has a measured pace."""
    measured = [p for p in paces if p.seconds_per_iteration is not None]
    if not measured:
        return None
    per_layer = sum(p.seconds_per_iteration / p.depth for p in measured) / len(measured)
    spent = left = 0.0
    for pace in paces:
        rate = pace.seconds_per_iteration or per_layer * pace.depth
        done = pace.latest[0] if pace.latest else 0
        spent += pace.latest[1] if pace.latest else 0.0
        left += 0.0 if pace.done else max(pace.iterations - done, 0) * rate
    return spent, left


def forecast_line(paces: list[TrialPace], running: int, gpus_per_trial: float, cpus_per_trial: float,
                  now: float) -> str | None:
    """One sentence: total GPU-hours (or CPU core-hours without GPUs), time left at ``running`` trials at a
    time, and the clock time it ends; None without a measured pace."""
    seconds = remaining_seconds(paces)
    if seconds is None:
        return None
    spent, left = seconds
    devices, unit = (gpus_per_trial, "GPU-hours") if gpus_per_trial else (cpus_per_trial, "CPU core-hours")
    wall = left / max(running, 1)
    finish = time.strftime("%H:%M %Z", time.localtime(now + wall))
    return (f"forecast: {len(paces)} trials ≈ {(spent + left) * devices / 3600:.2f} {unit} in all; about "
            f"{_duration(wall)} left at {max(running, 1)} trial(s) at a time, finishing around {finish} (from "
            f"the first evaluations; trials not started yet are estimated by depth)")


# The figures a plan's estimate starts from (docs/benchmarks.md), as (training images/s, the reference net's cost):
# a CIFAR net on 2 CPU threads, ResNet-20 in fp32 at 32×32 measured here (a net's cost grows with its depth and
# its image's pixels: ResNet-56 measured 177.7, the rule says 186); an ImageNet net per GPU, NVIDIA's published A100 figure for a ResNet-50 with
# AMP (2 470 images/s; not measured here), scaled by the paper's FLOPs (Table 1). CIFAR nets on a GPU: none yet.
CPU_CIFAR = (521.8, 20)  # images/s, depth
GPU_IMAGENET = (2470.0, 3.8)  # images/s, GFLOPs of a ResNet-50
IMAGENET_GFLOPS = {18: 1.8, 34: 3.6, 50: 3.8, 101: 7.6, 152: 11.3}
IMAGE_SIDE = {"cifar10": 32, "cifar100": 32, "digits": 8}  # the CIFAR-layout data sets' image sizes


def trial_seconds(config: TrainConfig, cpus: float, gpus: float) -> float | None:
    """A trial's training time by the bench figures, None where there is none for its net and device."""
    images = config.optim.iterations * config.optim.batch_size
    layout, depth = config.model.layout, config.model.depth
    if gpus and layout == "imagenet" and depth in IMAGENET_GFLOPS:
        rate, gflops = GPU_IMAGENET
        return images / (rate * gflops / IMAGENET_GFLOPS[depth] * gpus)  # data-parallel GPUs scale linearly
    if not gpus and layout == "cifar" and config.data.dataset in IMAGE_SIDE:
        rate, reference = CPU_CIFAR
        pixels = (32 / IMAGE_SIDE[config.data.dataset]) ** 2
        return images / (rate * reference / depth * pixels * max(cpus, 1) / 2)
    return None


def planned_line(configs: list[TrainConfig], at_once: int, cpus: float, gpus: float, now: float) -> str:
    """The forecast --plan-only prints: device-hours and wall time at ``at_once`` trials at a time, or why not."""
    seconds = [trial_seconds(c, cpus, gpus) for c in configs]
    if any(s is None for s in seconds):
        return ("forecast: none — no bench figure for these nets on this device yet (GPU figures for CIFAR nets "
                "come from bench/gpu_proof.py, not run on a GPU so far); the sweep prints one after its first "
                "evaluations")
    devices, unit = (gpus, "GPU-hours") if gpus else (cpus, "CPU core-hours")
    wall = sum(seconds) / at_once
    finish = time.strftime("%H:%M %Z", time.localtime(now + wall))
    source = "NVIDIA's published A100 ResNet-50 rate, by FLOPs" if gpus else "this repository's 2-core CPU figure"
    return (f"forecast (an estimate from docs/benchmarks.md: {source}; training only): {len(configs)} trials ≈ "
            f"{sum(seconds) * devices / 3600:.1f} {unit}, about {_duration(wall)} at {at_once} at a time, "
            f"finishing around {finish} if started now")


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{max(minutes, 1)} min"


class SweepForecast(tune.Callback):
    """Print ``forecast_line`` once, when every running trial has evaluated twice (so has a measured pace)."""

    def __init__(self, gpus_per_trial: float, cpus_per_trial: float):
        self.gpus_per_trial, self.cpus_per_trial = gpus_per_trial, cpus_per_trial
        self.paces: dict[str, TrialPace] = {}
        self.printed = False

    def _pace(self, trial: Any) -> TrialPace:
        if trial.trial_id not in self.paces:
            config = trial_config(trial.config)
            self.paces[trial.trial_id] = TrialPace(config.optim.iterations, config.model.depth)
        return self.paces[trial.trial_id]

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        pace = self._pace(trial)
        point = (int(result.get(ITERATION, 0)), float(result.get("time_total_s", 0.0)))
        pace.first = pace.first or point
        pace.latest = point
        if self.printed:
            return
        for other in trials:
            self._pace(other)
        running = [t for t in trials if t.status == "RUNNING"]
        if running and all(self._pace(t).seconds_per_iteration is not None for t in running):
            line = forecast_line(list(self.paces.values()), len(running), self.gpus_per_trial, self.cpus_per_trial,
                                 time.time())
            if line:
                print(line, flush=True)
                self.printed = True

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._pace(trial).done = True
