"""Tests for resnet_core.trainer (``fit``), resnet_core.probes and the CLI ``python -m resnet_core.train``.

Real training on the CPU with tiny configs: no mocks. Every run is deterministic (fixed seeds, one thread).
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from resnet_core import TrainConfig, device, fit, load_checkpoint, save_checkpoint
from resnet_core.checkpoint import tensors_in
from resnet_core.checks import Checks
from resnet_core.config import DataConfig
from resnet_core.data import Dataset, Split, augment_batch, load_dataset
from resnet_core.device import autocast_for, has_native_bf16, resolve_precision
from resnet_core.models import build_model, response_layers
from resnet_core.probes import global_norm, gradient_norms, layer_response_std
from resnet_core.step import RunningSums
from resnet_core.trainer import TrainingState, training_batch
from resnet_core.train import main
from tests.support.configs import TRAINER_BASE

ROOT = Path(__file__).resolve().parents[1]

BASE = TRAINER_BASE
# Everything a deterministic run reproduces (throughput is timing, not state).
REPRODUCIBLE = ("train/loss", "train/error", "test/loss", "test/error", "val/loss", "val/error", "opt/lr",
                "probe/grad_norm", "probe/response_std_mean")


def config(**changes: object) -> TrainConfig:
    return TrainConfig().replace(**{**BASE, **changes})


def random_label_synthetic(seed: int = 0) -> Dataset:
    """The synthetic set with shuffled training labels: nothing to learn, so the training error stays high."""
    data = load_dataset(DataConfig(dataset="synthetic"))
    labels = data.train.labels[torch.randperm(len(data.train.labels), generator=torch.Generator().manual_seed(seed))]
    data.train = Split(data.train.images, labels)
    return data


# --- precision ---


def _proc_cpuinfo_flags() -> set[str]:
    """The flags of /proc/cpuinfo, read here independently of the code under test."""
    if not Path("/proc/cpuinfo").exists():
        return set()
    return {f for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
            for f in line.split(":", 1)[1].split()}


def test_precision_auto_is_bf16_exactly_where_the_cpu_has_bf16_instructions() -> None:
    cpu = torch.device("cpu")
    flags = _proc_cpuinfo_flags()
    native = bool(flags & {"avx512_bf16", "amx_tile"}) if flags else has_native_bf16(cpu)
    assert has_native_bf16(cpu) == native
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


def test_cpu_bf16_probe_falls_back_to_cpuinfo_without_torchs_private_probes(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cpu = torch.device("cpu")
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert has_native_bf16(cpu) == bool(_proc_cpuinfo_flags() & {"avx512_bf16", "amx_tile"})
    # Both answers of the fallback, and a machine without /proc/cpuinfo.
    fake = tmp_path / "cpuinfo"
    monkeypatch.setattr(device, "CPUINFO", fake)
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n")
    assert has_native_bf16(cpu) is True and resolve_precision("auto", cpu) == "bf16"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert has_native_bf16(cpu) is False
    monkeypatch.setattr(device, "CPUINFO", tmp_path / "absent")
    assert has_native_bf16(cpu) is False


@pytest.mark.slow
def test_bf16_autocast_changes_the_arithmetic_not_the_outcome() -> None:
    cfg = config(**{"data.dataset": "digits", "optim.batch_size": 64, "optim.iterations": 60, "run.eval_every": 20})
    fp32, bf16 = (list(fit(cfg.replace(**{"run.precision": p}))) for p in ("fp32", "bf16"))
    # Autocast is really on: bf16 matmuls give different losses from the first evaluation on ...
    assert fp32[0].metrics["train/loss"] != bf16[0].metrics["train/loss"]
    # ... the weights stay fp32, and both runs learn the same amount.
    assert {t.dtype for t in bf16[-1].state()["model"].values() if t.is_floating_point()} == {torch.float32}
    for run in (fp32, bf16):
        assert run[-1].metrics["train/loss"] < 0.6 * run[0].metrics["train/loss"]
        assert run[-1].metrics["test/error"] < 70  # chance is 90 %


def test_under_bf16_autocast_bn_outputs_and_the_residual_stream_are_bf16() -> None:
    # What autocast_for's docstring promises, no more: bf16 activations, fp32 weights, BN statistics and loss.
    autocast = autocast_for(config(**{"run.precision": "bf16"}), torch.device("cpu"))
    model = build_model("cifar", 8, shortcut="B")
    dtypes: dict[str, torch.dtype] = {}
    watched = {"stem BN": model.bn1, "projection BN": model.layer2[0].shortcut.bn, "block output": model.layer2[0]}
    hooks = [m.register_forward_hook(lambda _m, _i, out, n=n: dtypes.__setitem__(n, out.dtype))
             for n, m in watched.items()]
    with autocast:
        logits = model(torch.randn(4, 3, 16, 16))
    loss = nn.functional.cross_entropy(logits.float(), torch.tensor([0, 1, 2, 3]))
    for h in hooks:
        h.remove()
    assert dtypes == dict.fromkeys(watched, torch.bfloat16)
    assert model.bn1.weight.dtype == model.bn1.running_var.dtype == loss.dtype == torch.float32


# --- training --------------------------------------------------------------------------------------------


def test_short_digits_run_learns_and_reports_every_metric() -> None:
    cfg = config(**{"data.dataset": "digits", "optim.batch_size": 64, "optim.iterations": 60,
                    "run.eval_every": 20, "run.probe_images": 32})
    results = list(fit(cfg))

    assert [r.iteration for r in results] == [20, 40, 60]
    assert [r.status for r in results] == ["running"] * 2 + ["completed"]
    assert [r.done for r in results] == [False] * 2 + [True]
    for r in results:
        for key in ("train/error", "train/loss", "test/error", "test/loss", "opt/lr", "perf/images_per_sec",
                    "probe/grad_norm", "probe/response_std_mean"):
            assert key in r.metrics and math.isfinite(r.metrics[key]), key
        assert "val/error" not in r.metrics and "val/loss" not in r.metrics  # no validation split asked for
        assert 0 <= r.metrics["train/error"] <= 100 and 0 <= r.metrics["test/error"] <= 100
        assert r.metrics["perf/images_per_sec"] > 0
        # Probes: one response per 3×3 layer of ResNet-8 (depth - 1 = stem + 6), gradient norm per weight.
        assert len(r.layer_response_std) == 7
        assert r.metrics["probe/response_std_mean"] == pytest.approx(sum(r.layer_response_std.values()) / 7)
        assert r.grad_norms and r.metrics["probe/grad_norm"] == pytest.approx(global_norm(r.grad_norms))

    first, last = results[0].metrics, results[-1].metrics
    assert first["train/error"] - last["train/error"] > 25, (first["train/error"], last["train/error"])
    assert last["train/loss"] < 0.6 * first["train/loss"]
    assert last["test/error"] < 70  # chance is 90 %


def test_results_at_every_eval_and_last_iteration_with_val_split() -> None:
    results = list(fit(config(**{"optim.iterations": 25, "run.eval_every": 10, "data.val_size": 64,
                                 "run.probe_images": 0})))
    assert [r.iteration for r in results] == [10, 20, 25]
    assert [r.status for r in results] == ["running", "running", "completed"]
    for r in results:
        assert 0 <= r.metrics["val/error"] <= 100 and math.isfinite(r.metrics["val/loss"])
        # probe_images=0 disables the response probe (the gradient norms are free and stay).
        assert "probe/response_std_mean" not in r.metrics and r.layer_response_std == {}
        assert "probe/grad_norm" in r.metrics
    # A validation error is a mean over 64 images: a multiple of 100/64.
    assert all(abs(r.metrics["val/error"] * 64 / 100 - round(r.metrics["val/error"] * 64 / 100)) < 1e-9
               for r in results)


def test_lr_follows_milestones_exactly() -> None:
    cfg = config(**{"optim.lr": 0.1, "optim.gamma": 0.1, "optim.milestones": [10, 20], "optim.iterations": 30,
                    "run.eval_every": 1, "run.probe_images": 0})
    lrs = {}
    for r in fit(cfg):
        lrs[r.iteration] = r.metrics["opt/lr"]
        # The optimiser really used it (not just the reported number).
        assert r.state()["optimizer"]["param_groups"][0]["lr"] == r.metrics["opt/lr"]
    assert sorted(lrs) == list(range(1, 31))
    # opt/lr is the rate of the last step before the evaluation; after 10 steps the rate drops (MultiStepLR).
    for iteration, lr in lrs.items():
        expected = 0.1 if iteration <= 10 else 0.01 if iteration <= 20 else 0.001
        assert lr == pytest.approx(expected, rel=1e-12), (iteration, lr)


def test_warmup_ends_at_first_check_when_threshold_is_100() -> None:
    cfg = config(**{"optim.warmup": True, "optim.warmup_lr": 0.01, "optim.warmup_until_error": 100,
                    "optim.lr": 0.1, "optim.milestones": [15], "optim.iterations": 20, "run.eval_every": 5})
    results = list(fit(cfg))
    lrs = [r.metrics["opt/lr"] for r in results]
    # Warm-up rate up to the first check (iteration 5), then the normal schedule (÷10 after iteration 15).
    assert lrs[0] == 0.01
    assert lrs[1:3] == [0.1, 0.1]
    assert lrs[3] == pytest.approx(0.01)
    assert results[-1].state()["warmup_active"] is False


def test_warmup_lasts_while_training_error_stays_above_threshold() -> None:
    cfg = config(**{"optim.warmup": True, "optim.warmup_lr": 0.01, "optim.warmup_until_error": 0.001,
                    "optim.iterations": 40, "run.eval_every": 10})
    results = list(fit(cfg, dataset=random_label_synthetic()))
    assert [r.metrics["opt/lr"] for r in results] == [0.01] * 4
    assert all(r.metrics["train/error"] > 0.001 for r in results)
    assert results[-1].state()["warmup_active"] is True
    optimizer_lr = results[-1].state()["optimizer"]["param_groups"][0]["lr"]
    assert optimizer_lr == 0.01


def test_warmup_is_a_training_error_threshold_not_a_step_count() -> None:
    # With eval_every == the trainer's check window (10), each result's train/error is the error the rule sees.
    changes = {"optim.warmup": True, "optim.warmup_lr": 0.01, "optim.lr": 0.1, "optim.iterations": 60,
               "run.eval_every": 10, "run.probe_images": 0}
    never = [r.metrics["train/error"] for r in fit(config(**changes, **{"optim.warmup_until_error": 0.001}))]
    # The first window whose error beats every earlier one (after the first): put the threshold just above it.
    j = next((i for i in range(1, len(never)) if never[i] < min(never[:i]) - 1.0), None)
    assert j is not None, never
    threshold = (never[j] + min(never[:j])) / 2
    results = list(fit(config(**changes, **{"optim.warmup_until_error": threshold})))
    # Identical trajectory while the error stays above the threshold, the warm-up rate until the window that
    # crosses it, the normal rate after.
    assert [r.metrics["train/error"] for r in results[: j + 1]] == never[: j + 1]
    assert [r.metrics["opt/lr"] for r in results] == [0.01] * (j + 1) + [0.1] * (len(results) - j - 1)


def test_divergence_stops_the_run_with_a_diverged_result() -> None:
    run = fit(config(**{"optim.lr": 1e6, "optim.iterations": 100, "run.eval_every": 50}))
    results = []
    for r in run:
        results.append(r)
        if r.status == "diverged":
            break
    last = results[-1]
    assert last.status == "diverged" and last.done
    assert last.iteration < 100
    assert not math.isfinite(last.metrics["train/loss"])
    assert last.metrics["opt/lr"] == 1e6
    assert all(r.status == "running" for r in results[:-1])
    with pytest.raises(StopIteration):  # nothing after it
        next(run)


@pytest.mark.parametrize(("changes", "fragments"), [
    ({"optim.batch_size": 600}, ["optim.batch_size=600", "512"]),
    ({"optim.batch_size": 32, "data.train_limit": 20}, ["optim.batch_size=32", "20"]),
])
def test_batch_larger_than_training_set_is_an_error(changes: dict, fragments: list[str]) -> None:
    with pytest.raises(ValueError) as info:
        next(fit(config(**changes)))
    for fragment in fragments:
        assert fragment in str(info.value)


def test_fit_validates_its_config() -> None:
    cfg = TrainConfig.from_dict({**BASE, "model.depth": 21}, validate_config=False)
    with pytest.raises(ValueError, match="6n\\+2"):
        next(fit(cfg))


# --- exact resume ----------------------------------------------------------------------------------------


def _reproducible(result) -> dict:  # noqa: ANN001
    return {k: v for k, v in result.metrics.items() if k in REPRODUCIBLE}


def _final_state(results: list) -> dict:
    return results[-1].state()


def _assert_same_state(a: dict, b: dict) -> None:
    assert a["iteration"] == b["iteration"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for index, buffers in a["optimizer"]["state"].items():
        assert torch.equal(buffers["momentum_buffer"], b["optimizer"]["state"][index]["momentum_buffer"])
    assert torch.equal(a["generator"], b["generator"]) and torch.equal(a["torch_rng"], b["torch_rng"])
    assert a["warmup_active"] == b["warmup_active"]


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])
def test_resume_continues_exactly(tmp_path: Path, precision: str) -> None:
    # Augmentation on, dropout, a validation split, a milestone after the resume point and a warm-up that
    # ends before it: every piece of state (batch order, augmentation and dropout RNGs, momentum, the
    # warm-up flag) must come back for the losses to match bit for bit.
    cfg = config(**{"model.head_dropout": 0.3, "data.augment": True, "data.val_size": 64, "optim.iterations": 40,
                    "optim.milestones": [25], "run.eval_every": 10, "optim.warmup": True,
                    "optim.warmup_until_error": 100.0, "run.precision": precision})
    uninterrupted = list(fit(cfg))
    expected = {r.iteration: _reproducible(r) for r in uninterrupted}
    assert set(expected) == {10, 20, 30, 40}
    assert all("val/loss" in m for m in expected.values())

    path = tmp_path / "ckpt.pt"
    interrupted = fit(cfg)
    for r in interrupted:
        assert _reproducible(r) == expected[r.iteration]
        if r.iteration == 20:
            r.save_checkpoint(path)
            live_state = r.state()
            break
    assert load_checkpoint(path)["iteration"] == 20

    resumed = list(fit(cfg, resume=path))
    assert [r.iteration for r in resumed] == [30, 40]
    assert [r.status for r in resumed] == ["running", "completed"]
    for r in resumed:
        assert _reproducible(r) == expected[r.iteration]  # ==, bit for bit
        assert r.layer_response_std == next(u for u in uninterrupted if u.iteration == r.iteration).layer_response_std
    _assert_same_state(_final_state(resumed), _final_state(uninterrupted))

    # The same from a state dict: the loaded file, and the live dict of the stopped run — twice, since
    # resuming must not modify the dict it was given.
    for state in (load_checkpoint(path), live_state, live_state):
        again = list(fit(cfg, resume=state))
        assert {r.iteration: _reproducible(r) for r in again} == {30: expected[30], 40: expected[40]}
        _assert_same_state(_final_state(again), _final_state(uninterrupted))


def test_resume_keeps_the_warmup_flag(tmp_path: Path) -> None:
    # Warm-up still on at the checkpoint (random labels: the error never falls below 1 %): the resumed run
    # must go on at the warm-up rate, not the base rate.
    data = random_label_synthetic()
    cfg = config(**{"optim.warmup": True, "optim.warmup_until_error": 1.0, "optim.iterations": 20})
    first = next(fit(cfg, dataset=data))
    assert first.iteration == 10 and first.state()["warmup_active"] is True
    first.save_checkpoint(tmp_path / "ckpt.pt")
    resumed = list(fit(cfg, resume=tmp_path / "ckpt.pt", dataset=data))
    assert [(r.iteration, r.metrics["opt/lr"]) for r in resumed] == [(20, 0.01)]


def test_resume_reads_a_checkpoint_saved_with_the_legacy_family_key(tmp_path: Path) -> None:
    # Checkpoints made before the rename call the cifar/imagenet axis "model.family".
    cfg = config(**{"optim.iterations": 20})
    uninterrupted = list(fit(cfg))
    state = next(fit(cfg)).state()
    state["config"] = {("model.family" if k == "model.layout" else k): v for k, v in state["config"].items()}
    save_checkpoint(state, tmp_path / "old.pt")
    resumed = list(fit(cfg, resume=tmp_path / "old.pt"))
    assert [(r.iteration, _reproducible(r)) for r in resumed] == [(20, _reproducible(uninterrupted[-1]))]
    # ... and is still compared: an old checkpoint of another layout is refused, under the current name.
    state["config"].update({"model.family": "imagenet", "model.depth": 18})
    with pytest.raises(ValueError, match="model.layout: checkpoint 'imagenet' vs now 'cifar'"):
        next(fit(cfg, resume=state))


def test_checkpoints_are_device_neutral_and_say_where_they_were_made(tmp_path: Path) -> None:
    state = next(fit(config(**{"optim.iterations": 10}))).state()
    assert state["device"] == "cpu"
    save_checkpoint(state, tmp_path / "ckpt.pt")
    loaded = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # no map_location: what a CPU machine does
    tensors = tensors_in(loaded)
    assert tensors and {t.device.type for t in tensors} == {"cpu"}




@pytest.mark.parametrize("recorded", [True, False], ids=["device recorded", "older checkpoint"])
def test_a_checkpoint_made_on_a_gpu_resumes_on_the_cpu(tmp_path: Path, recorded: bool) -> None:
    # What a CUDA run saves (device-neutral tensors; its data generator's state is CUDA's 16-byte Philox state,
    # which a CPU generator cannot take): weights, momentum, batch order and schedule carry over, the generator
    # is re-seeded.
    cfg = config(**{"optim.iterations": 15, "data.augment": True})  # 16 batches an epoch: the order carries over
    state = next(fit(cfg)).state()
    state.update(generator=torch.zeros(16, dtype=torch.uint8), cuda_rng=torch.zeros(16, dtype=torch.uint8))
    state["device"] = "cuda"
    if not recorded:  # saved before checkpoints recorded their device: told by the generator state
        del state["device"]
    resumed = list(fit(cfg, resume=state))
    assert [(r.iteration, r.status) for r in resumed] == [(15, "completed")]
    assert math.isfinite(resumed[0].metrics["train/loss"])
    # The same run from the CPU checkpoint itself differs only in the re-seeded draws, not in what carried over.
    again = list(fit(cfg, resume=next(fit(cfg)).state()))
    assert again[0].metrics["train/loss"] != resumed[0].metrics["train/loss"]
    assert torch.equal(again[0].state()["order"], resumed[0].state()["order"])


def test_batches_come_channels_last_in_bf16_with_the_values_autocast_would_give() -> None:
    cfg = config(**{"run.precision": "bf16", "data.augment": True})
    data = load_dataset(cfg.data)
    state = TrainingState(cfg, data, torch.device("cpu"))
    generator = torch.Generator().set_state(state.generator.get_state())
    indices = state.sampler.order[: cfg.optim.batch_size]
    x, _ = training_batch(state, data)
    assert x.dtype == torch.bfloat16 and x.is_contiguous(memory_format=torch.channels_last)
    fp32 = augment_batch(data.train.images[indices], generator, pad=2, flip=data.hflip)
    assert torch.equal(x, fp32.to(torch.bfloat16))
    assert data.train.images.dtype == torch.float32  # the shared data set is left as it was


@pytest.mark.slow
def test_compiled_runs_in_one_process_each_compile_afresh() -> None:
    # Tune reuses a trial's process for the next trial. Without a Dynamo reset per run, the second net's graphs
    # count towards the recompile limit of the first's forward, and past it Dynamo silently runs eagerly.
    from torch._dynamo.utils import counters

    for depth in (8, 14):
        counters.clear()
        with torch._dynamo.config.patch(recompile_limit=1):
            results = list(fit(config(**{"model.depth": depth, "run.compile": True, "run.probe_images": 0,
                                         "run.compile_mode": "reduce-overhead", "optim.iterations": 4,
                                         "run.eval_every": 4})))
        assert results[-1].status == "completed" and math.isfinite(results[-1].metrics["train/loss"])
        assert counters["stats"]["unique_graphs"] >= 1, (depth, dict(counters["stats"]))


def test_checks_act_one_window_late_except_at_an_evaluation() -> None:
    sums = RunningSums(torch.device("cpu"))
    checks = Checks(torch.device("cpu"), batch_size=4)
    for loss, wrong in ((2.0, 3), (1.0, 1)):
        sums.add(torch.tensor(loss), torch.tensor(wrong))
        checks.submit(sums.loss, sums.wrong, sums.steps)
        sums.restart()
        if loss == 2.0:
            assert list(checks.due(everything=False)) == []  # its copy may still be on its way
    assert list(checks.due(everything=False)) == [(2.0, 75.0)]
    assert list(checks.due(everything=True)) == [(1.0, 25.0)]
    assert list(checks.due(everything=True)) == []


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_the_whole_loop_runs_under_deterministic_algorithms(precision: str) -> None:
    # Every op of a step, evaluation and probe has a deterministic kernel (else torch raises here).

    cfg = config(**{"run.deterministic": True, "run.precision": precision, "data.augment": True})
    first, second = ([_reproducible(r) for r in fit(cfg)] for _ in range(2))
    assert first == second


# --- probes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_layer_response_std_in_network_order(shortcut: str) -> None:
    torch.manual_seed(0)
    model = build_model("cifar", 20, shortcut=shortcut)
    images = torch.randn(8, 3, 16, 16)

    # The order in which the main-path BNs actually run.
    fired: list[str] = []
    names = {module: name for name, module in response_layers(model)}
    hooks = [m.register_forward_hook(lambda m, i, o: fired.append(names[m])) for m in names]
    model.eval()
    with torch.no_grad():
        model(images)
    for h in hooks:
        h.remove()
    model.train()

    stds = layer_response_std(model, images)
    assert len(stds) == 19  # depth - 1: the stem and 18 3×3 convs; projection BNs excluded
    assert list(stds) == fired
    assert list(stds)[0] == "bn1"
    assert all(math.isfinite(v) and v > 0 for v in stds.values())
    assert model.training  # the probe restores the mode it found
    # A response is the BN output (eval mode), before the ReLU: its std matches a direct computation.
    with torch.no_grad():
        model.bn1.weight.fill_(3.0)  # a BN that is not the identity, so "after BN" is observable
        model.bn1.bias.fill_(-0.5)
    stds = layer_response_std(model, images)
    model.eval()
    with torch.no_grad():
        after_bn = model.bn1(model.conv1(images))
        before_bn = model.conv1(images)
    assert stds["bn1"] == pytest.approx(after_bn.std().item(), rel=1e-5)
    assert stds["bn1"] == pytest.approx(3 * before_bn.std().item(), rel=1e-3)
    assert stds["bn1"] > 1.2 * torch.relu(after_bn).std().item()  # not after the ReLU


def test_gradient_norms_after_a_training_step() -> None:
    torch.manual_seed(0)
    model = build_model("cifar", 8)
    assert gradient_norms(model) == {}  # no backward pass yet
    loss = nn.functional.cross_entropy(model(torch.randn(4, 3, 16, 16)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    norms = gradient_norms(model)
    assert norms and all(name.endswith("weight") for name in norms)
    params = dict(model.named_parameters())
    assert "fc.weight" in norms and "conv1.weight" in norms
    for name, value in norms.items():
        assert value == pytest.approx(params[name].grad.norm().item(), rel=1e-6)
    assert global_norm(norms) == pytest.approx(math.sqrt(sum(v * v for v in norms.values())))
    assert global_norm({"a": 3.0, "b": 4.0}) == 5.0


# --- import invariant ------------------------------------------------------------------------------------


def test_import_leaves_heavy_frameworks_out() -> None:
    code = ("import sys, resnet_core, resnet_core.train\n"
            "bad = [m for m in ('ray', 'mlflow', 'optuna', 'plotly', 'sklearn') if m in sys.modules]\n"
            "assert 'torch' in sys.modules\n"
            "print('LOADED', bad)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout


# --- CLI -------------------------------------------------------------------------------------------------


def _cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "resnet_core.train", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_cli_help_lists_every_config_flag() -> None:
    out = _cli("--help")
    assert out.returncode == 0, out.stderr
    flags = {"--" + key.split(".", 1)[1].replace("_", "-") for key in TrainConfig().to_dict()}
    assert {"--depth", "--dataset", "--iterations", "--warmup", "--shortcut", "--milestones"} <= flags
    flags |= {"--plain", "--no-residual", "--no-augment", "--checkpoint", "--resume", "--no-progress"}
    missing = sorted(flag for flag in flags if not re.search(re.escape(flag) + r"(?![\w-])", out.stdout))
    assert not missing, missing
    assert "6n+2" in out.stdout and "(default: 64000)" in out.stdout


@pytest.mark.slow
def test_cli_short_run_prints_falling_training_error() -> None:
    out = _cli("--dataset", "synthetic", "--depth", "8", "--iterations", "20", "--eval-every", "10",
               "--batch-size", "32", "--no-progress", "--threads", "1", "--probe-images", "16")
    assert out.returncode == 0, out.stderr
    assert "residual-8 completed at iteration 20" in out.stdout
    match = re.search(r"training error ([\d.]+)% \(first evaluation\) -> ([\d.]+)% \(last\)", out.stdout)
    assert match, out.stdout
    assert float(match[2]) < float(match[1])
    assert re.search(r"\[\s+10\] train/error=", out.stdout) and re.search(r"\[\s+20\] train/error=", out.stdout)


def test_cli_bad_value_fails_before_training(capsys: pytest.CaptureFixture) -> None:
    # In-process (the subprocess tests above cover the ``python -m`` entry point and its exit status).
    assert main(["--dataset", "synthetic", "--depth", "21", "--iterations", "20"]) == 2
    captured = capsys.readouterr()
    assert "6n+2" in captured.err and "model.depth=21" in captured.err
    assert captured.out == ""  # nothing printed: no "training ..." line, no progress, no metrics

    with pytest.raises(SystemExit) as info:  # not one of the flag's choices: argparse refuses it, naming them
        main(["--dataset", "mnist"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "invalid choice: 'mnist'" in err
    assert "cifar10" in err and "synthetic" in err and "imagenet" in err

    with pytest.raises(SystemExit) as info:  # not even an int: argparse refuses it
        main(["--depth", "abc"])
    assert info.value.code == 2
    assert "--depth" in capsys.readouterr().err


CLI_BASE = ["--dataset", "synthetic", "--depth", "8", "--batch-size", "32", "--eval-every", "10",
            "--no-progress", "--threads", "1", "--probe-images", "8", "--device", "cpu", "--milestones", "25"]


def test_cli_checkpoint_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "run.pt"
    assert main([*CLI_BASE, "--iterations", "20", "--checkpoint", str(ckpt)]) == 0
    state = load_checkpoint(ckpt)
    assert state["iteration"] == 20 and state["config"]["model.depth"] == 8
    capsys.readouterr()

    assert main([*CLI_BASE, "--iterations", "30", "--resume", str(ckpt), "--checkpoint", str(ckpt)]) == 0
    out = capsys.readouterr().out
    assert re.findall(r"\[\s*(\d+)\] train/error", out) == ["30"]  # continues at 20, not from 0
    assert "completed at iteration 30" in out
    resumed = load_checkpoint(ckpt)
    assert resumed["iteration"] == 30

    # The same as 30 iterations in one go.
    straight = tmp_path / "straight.pt"
    assert main([*CLI_BASE, "--iterations", "30", "--checkpoint", str(straight)]) == 0
    _assert_same_state(resumed, load_checkpoint(straight))


def test_cli_divergence_keeps_the_last_good_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "run.pt"
    assert main([*CLI_BASE, "--iterations", "10", "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    assert main([*CLI_BASE, "--iterations", "100", "--eval-every", "50", "--lr", "1e6",
                 "--checkpoint", str(ckpt)]) == 1
    assert "diverged" in capsys.readouterr().out
    state = load_checkpoint(ckpt)
    assert state["iteration"] == 10
    assert all(torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point())


def test_resume_refuses_a_different_experiment(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = tmp_path / "run.pt"
    assert main([*CLI_BASE, "--iterations", "10", "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    assert main([*CLI_BASE, "--iterations", "20", "--depth", "14", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "model.depth" in err
    # a longer schedule is a legitimate change
    assert main([*CLI_BASE, "--iterations", "20", "--resume", str(ckpt)]) == 0
