"""The single-run CLI, ``python -m resnet_core.train``: flag choices, the defaults its help shows, --output-dir and
--resume, torchrun, MLflow tracking and the progress bar. Real runs of ResNet-8 on the digits set (seconds each)."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

from resnet_core import config as cfg
from resnet_core.checkpoint import load_checkpoint
from resnet_core.config import TrainConfig
from resnet_core.train import main

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).parent / "torchrun"
# ResNet-8 (the smallest 6n+2) on 8×8 digits, one thread: two evaluations of 20 iterations in about a second.
TINY = ["--dataset", "digits", "--depth", "8", "--batch-size", "32", "--eval-every", "10", "--threads", "1",
        "--probe-images", "16", "--device", "cpu", "--precision", "fp32", "--no-progress", "--milestones", "25"]


def metrics(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]


def without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if not k.startswith("perf/")} for line in lines]


def flat_help(capsys: pytest.CaptureFixture, *argv: str) -> str:
    """The help ``main`` prints for ``argv --help``, on one line (argparse wraps it)."""
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())


# --- choices ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flag", "key", "bad", "valid"), [
    ("--dataset", "data.dataset", "mnist", cfg.DATASETS),
    ("--precision", "run.precision", "fp16", cfg.PRECISIONS),
    ("--shortcut", "model.shortcut", "D", cfg.SHORTCUTS),
    ("--recipe", "data.recipe", "timm", cfg.IMAGENET_RECIPES),
    ("--schedule", "optim.schedule", "cosine", cfg.SCHEDULES),
    ("--decode", "run.decode", "nvjpeg", cfg.DECODES),
    ("--generated", "data.generated", "cifar", cfg.GENERATED),
])
def test_an_enumerated_flag_refuses_a_value_outside_the_validations_choices(
        capsys: pytest.CaptureFixture, flag: str, key: str, bad: str, valid: tuple[str, ...]) -> None:
    section, name = key.split(".")
    field = next(f for f in dataclasses.fields(getattr(TrainConfig(), section)) if f.name == name)
    assert field.metadata["choices"] is valid  # one tuple: the flag's choices are what validate checks
    with pytest.raises(SystemExit) as exit_:
        main([flag, bad])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"argument {flag}: invalid choice: '{bad}'" in err
    assert all(f"'{choice}'" in err for choice in valid), err


def test_the_device_flag_names_its_forms_in_the_help(capsys: pytest.CaptureFixture) -> None:
    """cuda:N cannot be a fixed choice: the help lists the forms, validate refuses the rest."""
    text = flat_help(capsys)
    assert "--device DEVICE auto (cuda when present, else cpu), cpu, cuda, cuda:N" in text
    assert main(["--device", "tpu"]) == 2 and "run.device must be" in capsys.readouterr().err


# --- the defaults the help shows ---------------------------------------------------------------------------


def default_in(text: str, option: str) -> str:
    """The default the help shows for ``option`` (the flag and its metavar, as in ``--depth DEPTH``)."""
    return re.search(re.escape(option) + r" .*?\(default: ([^)]*)\)", text)[1]


def test_help_shows_the_defaults_of_the_recipe_that_applies(capsys: pytest.CaptureFixture) -> None:
    cifar = flat_help(capsys)
    assert "the paper's CIFAR-10 recipe" in cifar
    assert [default_in(cifar, o) for o in ("--depth DEPTH", "--iterations ITERATIONS", "--batch-size BATCH_SIZE",
                                           "--shortcut {A,B,C}", "--schedule {steps,plateau}")] == [
        "20", "64000", "128", "A", "steps"]
    assert default_in(cifar, "--milestones I,J").startswith("50% and 75% of --iterations")

    paper = flat_help(capsys, "--dataset", "imagenet")
    assert "the ImageNet recipe 'paper'" in paper
    assert [default_in(paper, o) for o in ("--depth DEPTH", "--iterations ITERATIONS", "--batch-size BATCH_SIZE",
                                           "--shortcut {A,B,C}", "--schedule {steps,plateau}", "--val-size VAL_SIZE",
                                           "--milestones I,J", "--layout {cifar,imagenet}")] == [
        "34", "600000", "256", "B", "plateau", "10000", "none", "imagenet"]

    torchvision = flat_help(capsys, "--dataset=imagenet", "--recipe", "torchvision")
    assert default_in(torchvision, "--depth DEPTH") == "50"
    assert default_in(torchvision, "--milestones I,J") == f"{30 * 5004},{60 * 5004}"


# --- --output-dir and --resume --------------------------------------------------------------------------


def test_output_dir_holds_checkpoint_config_and_one_metrics_line_per_evaluation(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main([*TINY, "--iterations", "20", "--output-dir", str(run)]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl"]
    config = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert config.model.depth == 8 and config.optim.iterations == 20 and config.data.dataset == "digits"
    lines = metrics(run)
    assert [(m["iteration"], m["status"]) for m in lines] == [(10, "running"), (20, "completed")]
    assert {"train/error", "test/error", "opt/lr"} <= set(lines[0])
    assert load_checkpoint(run / "checkpoint.pt")["iteration"] == 20  # weights_only=True
    capsys.readouterr()

    # Not a second run over the first one ...
    assert main([*TINY, "--iterations", "30", "--output-dir", str(run)]) == 2
    assert "already holds a run" in capsys.readouterr().err and len(metrics(run)) == 2

    # ... but --resume (no path: the directory's checkpoint) continues it, as one run of 30 iterations.
    assert main([*TINY, "--iterations", "30", "--output-dir", str(run), "--resume"]) == 0
    straight = tmp_path / "straight"
    assert main([*TINY, "--iterations", "30", "--output-dir", str(straight)]) == 0
    assert [m["iteration"] for m in metrics(run)] == [10, 20, 30]
    assert without_timing(metrics(run))[2:] == without_timing(metrics(straight))[2:]
    resumed, whole = load_checkpoint(run / "checkpoint.pt"), load_checkpoint(straight / "checkpoint.pt")
    assert resumed["iteration"] == 30 and all(torch.equal(resumed["model"][k], whole["model"][k])
                                              for k in whole["model"])
    assert json.loads((run / "config.json").read_text())["optim.iterations"] == 30


def test_resume_cuts_metrics_back_to_the_checkpoint_and_needs_a_checkpoint_to_find(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main([*TINY, "--iterations", "10", "--output-dir", str(run)]) == 0
    with (run / "metrics.jsonl").open("a") as f:  # an evaluation whose checkpoint a crash never saved
        f.write(json.dumps({"iteration": 20, "status": "completed"}) + "\n")
    assert main([*TINY, "--iterations", "20", "--output-dir", str(run), "--resume"]) == 0
    lines = metrics(run)
    assert [m["iteration"] for m in lines] == [10, 20] and "train/error" in lines[1]
    capsys.readouterr()
    assert main([*TINY, "--iterations", "20", "--resume"]) == 2
    assert "--resume without a path" in capsys.readouterr().err


def test_resuming_a_finished_run_says_there_is_nothing_to_train(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """It exited 1 without a word."""
    run = tmp_path / "run"
    assert main([*TINY, "--iterations", "10", "--output-dir", str(run)]) == 0
    capsys.readouterr()
    assert main([*TINY, "--iterations", "10", "--output-dir", str(run), "--resume"]) == 0
    assert "nothing to train: the checkpoint is at iteration 10 of 10" in capsys.readouterr().out
    assert [m["iteration"] for m in metrics(run)] == [10]


def test_a_longer_resume_names_the_milestones_that_keep_the_checkpoints_schedule(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """--iterations may change on a resume, but it also moves the paper-proportion milestones it implies: the
    refusal said only that the milestones differ."""
    run, scaled = tmp_path / "run", [a for a in TINY if a not in ("--milestones", "25")]
    assert main([*scaled, "--iterations", "20", "--output-dir", str(run)]) == 0
    capsys.readouterr()
    assert main([*scaled, "--iterations", "40", "--output-dir", str(run), "--resume"]) == 2
    assert "also pass --milestones 10,15" in capsys.readouterr().err
    assert main([*scaled, "--iterations", "40", "--milestones", "10,15", "--output-dir", str(run), "--resume"]) == 0
    assert [m["iteration"] for m in metrics(run)] == [10, 20, 30, 40]


# --- torchrun --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_trains_in_two_gloo_processes_and_rank_0_alone_writes(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    """Two processes share each batch of 32 (16 images each, DDP averaging the gradients) and log to one MLflow run.

    Not bit for bit the one-process run: each process's BatchNorm normalises over its own 16 images (the paper's
    per-GPU statistics, resnet_core/parallel.py), so losses differ a little; the batches, the images counted, the
    schedule and the evaluations' structure are the same (tests/test_parallel.py checks the batches' halves)."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "resnet_core.train", *TINY,
               "--iterations", "20", "--output-dir", str(tmp_path / "two"), "--tracking-uri", store]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 processes of 16 images" in done.stdout
    assert len(re.findall(r"\[\s+10\] train/error", done.stdout)) == 1  # rank 1 prints nothing
    assert "it/s" not in done.stderr  # no progress bar without a terminal
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "config.json", "metrics.jsonl",
                                                                    "mlflow.json"]
    two = metrics(tmp_path / "two")
    assert json.loads((tmp_path / "two" / "config.json").read_text())["optim.batch_size"] == 32  # the whole batch

    assert main([*TINY, "--iterations", "20", "--output-dir", str(tmp_path / "one")]) == 0
    one = metrics(tmp_path / "one")
    same = ("iteration", "status", "train/images", "test/images", "opt/lr")
    assert [{k: m[k] for k in same} for m in two] == [{k: m[k] for k in same} for m in one]
    for a, b in zip(two, one):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=0.1)  # measured: within 4 %

    from mlflow.tracking import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    assert run.data.tags["workers"] == "2" and run.data.params["optim.batch_size"] == "32"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/error")] == [10, 20]


# --- MLflow ----------------------------------------------------------------------------------------------


def test_tracking_logs_one_run_that_a_resume_continues(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mlflow.tracking import MlflowClient

    store, run_dir = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "run"
    tracked = [*TINY, "--output-dir", str(run_dir), "--tracking-uri", store, "--experiment", "cli"]
    assert main([*tracked, "--iterations", "10"]) == 0
    assert main([*tracked, "--iterations", "20", "--resume"]) == 0
    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("cli").experiment_id])
    assert run.info.run_name == "residual-8 seed 0" and run.info.status == "FINISHED"
    tags = run.data.tags
    assert {k: tags[k] for k in ("role", "family", "depth", "shortcut", "dataset", "outcome", "workers")} == {
        "role": "train", "family": "residual", "depth": "8", "shortcut": "A", "dataset": "digits",
        "outcome": "completed", "workers": "1"}
    assert run.data.params["model.depth"] == "8" and set(run.data.params) == set(TrainConfig().to_dict())
    history = client.get_metric_history(run.info.run_id, "test/error")
    assert [m.step for m in history] == [10, 20]
    assert history[-1].value == pytest.approx(metrics(run_dir)[-1]["test/error"])


@pytest.mark.parametrize("uri", ["http://alice:s3cret@mlflow.example:5000", "https://tok3n-abc@mlflow.example"])
def test_a_tracking_uri_holding_a_secret_is_refused_before_anything_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture, uri: str) -> None:
    assert main([*TINY, "--iterations", "10", "--output-dir", str(tmp_path / "run"), "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "holds a secret" in err and "s3cret" not in err and "tok3n" not in err
    assert not (tmp_path / "run").exists()


# --- progress --------------------------------------------------------------------------------------------


def on_a_terminal(*argv: str) -> str:
    """Run the CLI with stderr on a pseudo-terminal (80 columns); what the terminal showed."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    process = subprocess.Popen([sys.executable, "-m", "resnet_core.train", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=follower, env={**os.environ, "TERM": "xterm"})
    os.close(follower)
    shown, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([leader], [], [], 1.0)[0]:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            shown += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    assert process.wait(timeout=30) == 0, shown.decode(errors="replace")[-2000:]
    return shown.decode(errors="replace")


@pytest.mark.slow
def test_the_progress_bar_moves_between_evaluations_on_a_terminal_only() -> None:
    """One evaluation, at the end, of a run of some seconds: the bar still shows the iterations before it."""
    argv = [a for a in TINY if a != "--no-progress"]
    shown = on_a_terminal(*argv, "--iterations", "400", "--eval-every", "400")
    counts = {int(n) for n in re.findall(r"\b(\d+)/400\b", shown)}
    assert 400 in counts and any(40 <= n <= 360 for n in counts), shown[-2000:]  # redrawn mid-run, not only at 400
    assert not re.search(r"\d+/20\b", on_a_terminal(*TINY, "--iterations", "20"))  # --no-progress: no bar
