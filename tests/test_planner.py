"""``--plan-only --assume-cluster``: the documented cluster commands placed by Ray's own scheduler on a simulated
cluster of the shape they name (a local Ray with those logical resources), before any such hardware exists."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.cli import plan_from_argv
from sweeps.driver.cluster_shape import NodeType, parse_cluster
from sweeps.driver.plan import COORDINATOR_CPUS
from sweeps import depth_vs_error
from support.plans import store_args, tiny_args

ROOT = Path(__file__).resolve().parents[1]
TABLE_2 = ["--preset", "imagenet", "--plan-only"]


def plan_only(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The user's command, in its own process (it starts and stops its own simulated Ray)."""
    return subprocess.run([sys.executable, "sweeps/depth_vs_error.py", *flags], cwd=ROOT, capture_output=True,
                          text=True, timeout=180, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **(env or {})})


def test_table_2_fits_exactly_one_8_gpu_64_core_node():
    """Before: each worker's room was 8.00125 CPUs (8 + the coordinator's share), so 7 of 8 fitted and the
    preset was refused on the very node the docs name."""
    run = plan_only(*TABLE_2, "--assume-cluster", "1x64cpu8gpu")
    assert run.returncode == 0, run.stdout + run.stderr
    waves = [line for line in run.stdout.splitlines() if line.strip().startswith("wave ")]
    assert [w.split(": ", 1)[1] for w in waves] == [
        "plain-34 seed 0: 8 worker(s) on 64cpu8gpu", "residual-34 seed 0: 8 worker(s) on 64cpu8gpu",
        "plain-18 seed 0: 8 worker(s) on 64cpu8gpu", "residual-18 seed 0: 8 worker(s) on 64cpu8gpu"]
    assert "at most 1 trial(s), in 4 wave(s)" in run.stdout and "fits: every trial can be placed" in run.stdout
    forecast = next(line for line in run.stdout.splitlines() if line.startswith("forecast"))
    assert "an estimate from docs/benchmarks.md" in forecast and "GPU-hours" in forecast and "at 1 at a time" in forecast


def test_a_node_one_core_short_is_refused_in_seconds_naming_the_flags():
    started = time.monotonic()
    run = plan_only(*TABLE_2, "--assume-cluster", "1x63cpu8gpu")
    assert run.returncode == 2 and "refused: this Ray cluster cannot run a trial" in run.stdout
    assert "--cpus-per-trial" in run.stdout and "--workers-per-trial" in run.stdout
    assert time.monotonic() - started < 60


KUBERAY = ["--assume-cluster", "cluster/kuberay/raycluster.yaml", "--data-dir", "/mnt/shared/imagenet",
           "--storage-path", "/mnt/shared/ray_results", "--tracking-uri", "http://mlflow.example:5000"]


def test_table_2_on_the_kuberay_recipe_puts_one_trial_on_each_imagenet_pod():
    """The recipe file itself: its head (no CPUs) and both worker groups at maxReplicas; the command of
    cluster/README.md. Before: the coordinators' CPU pushed a worker of the second trial to a one-GPU pod (7 + 1),
    and Ray Train's PACK spread a trial over eight one-GPU pods while an 8-GPU pod was free."""
    run = plan_only(*TABLE_2, *KUBERAY, env={"RESNET_STUDIES_SHARED_STORAGE": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 × imagenet-8gpu (64 CPU, 8 GPU" in run.stdout and "replicas: 0 now" in run.stdout
    waves = [line for line in run.stdout.splitlines() if line.strip().startswith("wave ")]
    assert "at most 2 trial(s), in 2 wave(s)" in run.stdout
    assert len(waves) == 4 and all(w.endswith("8 worker(s) on imagenet-8gpu") for w in waves), waves


def test_a_multi_node_shape_refuses_a_local_store_naming_the_flag():
    run = plan_only("--preset", "paper", "--plan-only", "--assume-cluster", "head:4cpu,2x8cpu1gpu")
    assert run.returncode == 2 and "--tracking-uri http://HOST:5000" in run.stdout, run.stdout + run.stderr


def test_assume_cluster_without_plan_only_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_:
        depth_vs_error.main(["--assume-cluster", "1x8cpu"])
    assert exit_.value.code == 2 and "add --plan-only" in capsys.readouterr().err


@pytest.mark.parametrize("spec, expected", [
    ("1x64cpu8gpu", [NodeType("64cpu8gpu", 1, 64, 8)]),
    ("head:8cpu,4x8cpu1gpu", [NodeType("head", 1, 8, 0), NodeType("8cpu1gpu", 4, 8, 1)]),
    ("2x16cpu2gpu128gb+accel=4", [NodeType("16cpu2gpu128gb+accel=4", 2, 16, 2, 128, {"accel": 4})]),
])
def test_cluster_specs(spec, expected):
    assert parse_cluster(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("8gpu", "needs its CPUs"), ("4x8cpus", "cannot read '4x8cpus'"), ("0x8cpu", "has no node"),
    ("1x8cpu+accel", "is not NAME=N"), ("missing.yaml", "no such recipe file"), ("", "names no node"),
])
def test_bad_cluster_specs_name_the_bad_part(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_cluster(spec)


def test_the_ray_up_recipe_is_read_at_each_types_max_workers():
    types = {t.name: t for t in parse_cluster(str(ROOT / "cluster" / "ray-up.yaml"))}
    assert list(types)[0] == "head" and types["head"].cpus == 0
    assert (types["gpu_worker"].count, types["gpu_worker"].gpus) == (4, 1)
    assert (types["imagenet_worker"].count, types["imagenet_worker"].cpus, types["imagenet_worker"].gpus) == (2, 96, 8)


@pytest.mark.parametrize("cpus, workers", [(64, 8), (2, 2), (10, 3), (96, 8)])
def test_a_trials_workers_and_coordinator_never_ask_for_more_than_the_trial(tmp_path, cpus, workers):
    """In Ray's fixed-point unit (1e-4), what Ray adds up: within the trial's CPUs, and N workers on a node leave
    room for N coordinators (Ray may place any trial's coordinator beside them)."""
    plan = plan_from_argv(depth_vs_error.STUDY, [*tiny_args(), *store_args(tmp_path), "--workers-per-trial",
                                                 str(workers), "--cpus-per-trial", str(cpus)])
    units = round(plan.worker_request["CPU"] * 1e4) * workers + round(COORDINATOR_CPUS * 1e4)
    assert units <= cpus * 1e4 and round(plan.worker_request["CPU"] * 1e4) * workers <= (cpus - workers * 0.01) * 1e4
    assert plan.worker_request["CPU"] > cpus / workers - 0.0102


def test_the_forecast_scales_the_bench_figures_and_says_where_it_has_none(tmp_path):
    """Table 2's four nets on 8 GPUs each: 4 × 600k iterations × 256 images at NVIDIA's published ResNet-50 rate,
    by FLOPs; the paper's CIFAR preset on a GPU: no figure is measured, so no time is claimed."""
    from sweeps.driver.forecast import GPU_IMAGENET, IMAGENET_GFLOPS, planned_line, trial_seconds

    table_2 = plan_from_argv(depth_vs_error.STUDY, ["--preset", "imagenet"])
    expected = sum(600_000 * 256 / (GPU_IMAGENET[0] * GPU_IMAGENET[1] / IMAGENET_GFLOPS[c.model.depth] * 8)
                   for c in table_2.configs())
    assert sum(trial_seconds(c, 64, 8) for c in table_2.configs()) == pytest.approx(expected)
    line = planned_line(table_2.configs(), 1, 64, 8, now=0)
    assert f"≈ {expected * 8 / 3600:.1f} GPU-hours" in line
    paper = plan_from_argv(depth_vs_error.STUDY, ["--preset", "paper"])
    assert planned_line(paper.configs(), 2, 1, 0.5, now=0).startswith("forecast: none")
    smoke = plan_from_argv(depth_vs_error.STUDY, [*tiny_args(), *store_args(tmp_path), "--dataset", "digits"])
    shallow, deep = (trial_seconds(c, 1, 0) for c in (smoke.configs()[-1], smoke.configs()[0]))
    assert deep / shallow == pytest.approx(smoke.configs()[0].model.depth / smoke.configs()[-1].model.depth)
