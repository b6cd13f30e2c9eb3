"""Command line for one training run: ``python -m resnet_core.train --depth 56 --plain --dataset digits``.

Every ``TrainConfig`` field is a flag (``--help`` lists them with the defaults of the recipe that applies:
``--dataset imagenet --help`` shows the ImageNet recipe's), made by resnet_core/flags.py, which the sweep CLIs
share. The run's own flags, as in torchvision's reference scripts: ``--output-dir`` (checkpoint, config.json,
metrics.jsonl), ``--resume``, a progress bar, and data-parallel training under ``torchrun``
(``torchrun --nproc-per-node N -m resnet_core.train ...``: each process trains on its slice of every batch,
resnet_core/parallel.py; rank 0 alone prints and writes). ``--tracking-uri`` logs the run to MLflow, which is
imported only then: resnet_core itself never imports it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

from resnet_core.checkpoint import CheckpointError, load_checkpoint
from resnet_core.config import IMAGENET_RECIPES, TrainConfig, config_net_name, family_name, recipe_tag
from resnet_core.data import DatasetUnavailableError
from resnet_core.device import resolve_device, resolve_precision
from resnet_core.flags import add_config_arguments, base_config, config_from_args
from resnet_core.parallel import Shard
from resnet_core.trainer import Result, fit

# ``--resume`` without a path: the checkpoint this run writes (``--checkpoint``, or DIR/checkpoint.pt).
RESUME_OWN = Path("<own checkpoint>")
# What torchrun (torch.distributed.run) sets in each process it starts; all of them mean "join the group".
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
PROGRESS_SECONDS = 1.0  # how often the progress bar redraws at most (tqdm's mininterval)


def get_args_parser(shown: TrainConfig | None = None) -> argparse.ArgumentParser:
    """Every config flag (the help showing ``shown``'s values as defaults: the CIFAR-10 recipe when None) plus the
    run's own: where it writes, what it resumes, MLflow tracking, whether to draw progress."""
    imagenet = shown is not None and shown.data.dataset == "imagenet"
    recipe = f"the ImageNet recipe {shown.data.recipe!r}" if imagenet else "the paper's CIFAR-10 recipe (§4.2)"
    parser = argparse.ArgumentParser(
        prog="python -m resnet_core.train",
        description=f"Train one plain or residual net (He et al. 2016). The defaults shown are those of {recipe} "
                    "(`--dataset imagenet [--recipe torchvision] --help` shows the ImageNet ones). E.g. `python -m "
                    "resnet_core.train --depth 56 --plain --dataset digits --iterations 600 --eval-every 100 "
                    "--output-dir runs/plain-56`; on N processes: `torchrun --nproc-per-node N -m resnet_core.train "
                    "...` (--batch-size stays the whole batch, split over them).",
    )
    add_config_arguments(parser, shown=shown)
    run = parser.add_argument_group("this run")
    run.add_argument("--output-dir", type=Path, default=None, metavar="DIR",
                     help="write the run here: checkpoint.pt (at every evaluation, atomically), config.json (the "
                          "whole config, which TrainConfig.from_dict reads) and metrics.jsonl (one line per "
                          "evaluation); a directory already holding a run is refused unless --resume is given")
    run.add_argument("--checkpoint", type=Path, default=None, metavar="PATH",
                     help="save the checkpoint here instead (at every evaluation, atomically; default: "
                          "DIR/checkpoint.pt with --output-dir, else none)")
    run.add_argument("--resume", type=Path, nargs="?", const=RESUME_OWN, default=None, metavar="PATH",
                     help="continue from this checkpoint; without PATH, from the one this run writes (--checkpoint "
                          "or DIR/checkpoint.pt), with metrics.jsonl cut back to the checkpoint's iteration")
    run.add_argument("--tracking-uri", default=None, metavar="URI",
                     help="log the run to this MLflow store (sqlite:///PATH/mlflow.db, http://host:5000): the config "
                          "as params, metrics at every evaluation, the net's tags; a URI holding a password or token "
                          "is refused (give it in MLFLOW_TRACKING_PASSWORD / MLFLOW_TRACKING_TOKEN)")
    run.add_argument("--experiment", default="train", help="MLflow experiment with --tracking-uri (default: train)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bar (there is none when stderr is not a terminal, nor on ranks other than 0)")
    return parser


def shown_config(argv: list[str]) -> TrainConfig:
    """The config whose values ``--help`` shows as defaults: that of the --dataset and --recipe in ``argv`` (read
    before the full parse; a bad value shows the CIFAR-10 defaults and is refused by the full parse)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--dataset")
    pre.add_argument("--recipe")
    known, _ = pre.parse_known_args(argv)
    recipe = known.recipe if known.recipe in IMAGENET_RECIPES else None
    return base_config(known.dataset, recipe)


class OutputDir:
    """What ``--output-dir`` holds: ``checkpoint.pt``, ``config.json`` and ``metrics.jsonl``."""

    def __init__(self, path: Path):
        self.path = path
        self.checkpoint, self.config, self.metrics = (path / "checkpoint.pt", path / "config.json",
                                                      path / "metrics.jsonl")

    def holds_a_run(self) -> bool:
        return self.checkpoint.exists() or self.metrics.exists()

    def start(self, config: TrainConfig, resumed_at: int) -> None:
        """Write config.json, and keep the lines of metrics.jsonl up to ``resumed_at`` (a resumed run writes the
        later ones again; 0: none)."""
        self.path.mkdir(parents=True, exist_ok=True)
        _write_atomically(self.config, json.dumps(config.to_dict(), indent=2) + "\n")
        kept = []
        if resumed_at and self.metrics.exists():
            kept = [line for line in self.metrics.read_text().splitlines()
                    if line.strip() and json.loads(line)["iteration"] <= resumed_at]
        _write_atomically(self.metrics, "".join(line + "\n" for line in kept))

    def record(self, result: Result) -> None:
        """Append one evaluation to metrics.jsonl (a non-finite value, as a diverged loss, is written as null)."""
        line = {"iteration": result.iteration, "status": result.status,
                **{k: (v if math.isfinite(v) else None) for k, v in result.metrics.items()}}
        with self.metrics.open("a") as f:
            f.write(json.dumps(line) + "\n")


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def launched_by_torchrun() -> bool:
    """True in a process torchrun started (its rank, the group's size and where to meet are in the environment)."""
    return all(name in os.environ for name in TORCHRUN_ENV)


def join_process_group(device: str) -> str:
    """Join the process group torchrun describes (nccl on CUDA, gloo on the CPU) and return this process's
    device: ``auto`` and ``cuda`` become the GPU of index LOCAL_RANK where there is CUDA (one GPU per process)."""
    local_rank = int(os.environ["LOCAL_RANK"])
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{local_rank}"
    resolved = resolve_device(device)  # a bad one is refused before any process waits on the others
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)  # NCCL's collectives run on the current device
    dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return str(resolved)


def refuse_secret_uri(uri: str) -> None:
    """Raise ValueError for a tracking URI holding a password, or in http(s) a user name (a token): it would be
    copied into the process list and shell history. resnet_core cannot read sweeps' ``refuse_password`` (imports run
    from sweeps to resnet_core, never back), so this is its minimal equivalent."""
    try:
        parts = urlsplit(uri)
        password, user = parts.password, parts.username
    except ValueError:
        return
    if password or (user and parts.scheme.lower() in ("http", "https")):
        host = parts.netloc.rpartition("@")[2]
        raise ValueError(f"--tracking-uri {parts.scheme}://***@{host}... holds a secret in its user part; give "
                         "the credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
                         "MLFLOW_TRACKING_TOKEN instead")


def run_tags(config: TrainConfig, world: int) -> dict[str, str]:
    """The tags of the run: the net, its data and precision (as a sweep's trial names them), and its processes."""
    m = config.model
    tags = {"role": "train", "family": family_name(config), "depth": str(m.depth),
            "shortcut": m.shortcut if m.residual else "none", "seed": str(config.run.seed),
            "dataset": config.data.dataset, "layout": m.layout,
            "precision": resolve_precision(config.run.precision, resolve_device(config.run.device)),
            "workers": str(world), "outcome": "running"}
    if recipe := recipe_tag(config):
        tags["recipe"] = recipe
    return tags


class TrackedRun:
    """The run's one MLflow run (``--tracking-uri``): the config as params, every evaluation's metrics at its
    iteration, tags, and a status that says how it ended. Resumed in the same --output-dir, the run goes on in the
    MLflow run it started (its id is kept in DIR/mlflow.json). mlflow is imported here, only when asked for."""

    def __init__(self, uri: str, experiment: str, config: TrainConfig, tags: dict[str, str],
                 output: OutputDir | None, resumed: bool):
        if uri.startswith(("http://", "https://")):  # one refused connection should not block for minutes
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(uri)
        record = output.path / "mlflow.json" if output else None
        earlier = json.loads(record.read_text()) if resumed and record and record.exists() else {}
        if earlier.get("tracking_uri") == uri and earlier.get("experiment") == experiment:
            self.run_id = earlier["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, "outcome", "running")
            return
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run = self.client.create_run(experiment_id, run_name=f"{config_net_name(config)} seed {config.run.seed}",
                                     tags=tags)
        self.run_id = run.info.run_id
        params = [Param(k, (json.dumps(v) if isinstance(v, list) else str(v))[:6000])
                  for k, v in config.to_dict().items()]
        self.client.log_batch(self.run_id, params=params)
        if record:
            record.write_text(json.dumps({"tracking_uri": uri, "experiment": experiment, "run_id": self.run_id}))

    def log(self, result: Result) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, result.iteration) for k, v in result.metrics.items() if math.isfinite(v)]
        self.client.log_batch(self.run_id, metrics=metrics)

    def finish(self, outcome: str) -> None:
        """Tag the outcome (completed, diverged, failed, interrupted) and end the run FINISHED only when completed."""
        status = {"completed": "FINISHED", "interrupted": "KILLED"}.get(outcome, "FAILED")
        self.client.set_tag(self.run_id, "outcome", outcome)
        self.client.set_terminated(self.run_id, status=status)


@contextlib.contextmanager
def progress_bar(total: int, start: int, enabled: bool) -> Iterator[Any]:
    """A tqdm bar of the iterations that moves between evaluations: torch calls it after every optimiser step (a
    global post-step hook, removed on exit), and it redraws every PROGRESS_SECONDS at most. Off unless
    ``enabled``; the caller sets the bar to each evaluation's iteration."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, disable=not enabled, unit="it", dynamic_ncols=True,
               mininterval=PROGRESS_SECONDS)
    hook = register_optimizer_step_post_hook(lambda *_: bar.update()) if enabled else None
    try:
        yield bar
    finally:
        if hook is not None:
            hook.remove()
        bar.close()


def main(argv: list[str] | None = None) -> int:
    """Train the configured net, printing each evaluation and a summary; the exit status is 0 when it
    completed, 1 when it diverged, 2 for a bad value, checkpoint, output directory or tracking store, or a missing
    data set."""
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser(shown_config(argv)).parse_args(argv)
    try:
        config = config_from_args(args)
        if args.tracking_uri:
            refuse_secret_uri(args.tracking_uri)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    joined = launched_by_torchrun() and not dist.is_initialized()
    try:
        ran = config.replace(**{"run.device": join_process_group(config.run.device)}) if joined else config
        return _train(args, ran, Shard.current(), recorded=config)
    except ValueError as exc:  # e.g. a device torchrun's process cannot have
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


@dataclass
class Reports:
    """Where the run's words and evaluations go: on rank 0 (``lead``) the terminal, --output-dir, the checkpoint
    and MLflow; on the other ranks nowhere, but for their own errors."""

    rank: int
    output: OutputDir | None = None
    checkpoint: Path | None = None
    tracked: TrackedRun | None = None

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def say(self, text: str) -> None:
        if self.lead:
            print(text)

    def fail(self, text: str) -> None:
        print(f"error: {text}" if self.lead else f"error (rank {self.rank}): {text}", file=sys.stderr)

    def evaluation(self, result: Result, write: Callable[[str], None], first: bool) -> None:
        """Show one evaluation (``write``: the progress bar's, which keeps the bar below), then record it."""
        if not self.lead:
            return
        if first and result.info:  # streamed data: its identity (fingerprint, counts) and recipe
            write("data: " + "  ".join(f"{k}={v}" for k, v in result.info.items()))
        write(f"[{result.iteration:>6}] " + "  ".join(f"{k}={v:.4g}" for k, v in result.metrics.items()))
        if self.output:  # before the checkpoint: a resume cuts metrics.jsonl back to the checkpoint's iteration
            self.output.record(result)
        if self.tracked:
            self.tracked.log(result)
        if self.checkpoint and result.status != "diverged":  # keep the last good checkpoint, not NaN weights
            result.save_checkpoint(self.checkpoint)


def _train(args: argparse.Namespace, config: TrainConfig, shard: Shard, recorded: TrainConfig) -> int:
    """The run itself, once the config is known and this process has its place among the processes; ``recorded``
    is the config as given (config.json, MLflow's params), before torchrun's process took its own GPU."""
    reports = Reports(shard.rank, OutputDir(args.output_dir) if args.output_dir else None)
    output = reports.output
    reports.checkpoint = args.checkpoint or (output.checkpoint if output else None)
    device = resolve_device(config.run.device)
    saved, problem = None, None
    try:
        shard.local_batch(config.optim.batch_size)  # refuses a batch the processes cannot split evenly
        resume = _resume_path(args.resume, reports.checkpoint)
        if reports.lead and output and resume is None and output.holds_a_run():
            raise ValueError(f"--output-dir {output.path} already holds a run ({output.checkpoint.name} or "
                             f"{output.metrics.name}); pass --resume to continue it, or choose another directory")
        saved = load_checkpoint(resume, map_location=device) if resume is not None else None  # weights_only=True
    except (ValueError, CheckpointError) as exc:
        problem = str(exc)
    start = int(saved["iteration"]) if saved is not None else 0
    if reports.lead and problem is None:
        if output:
            output.start(recorded, start)
        if args.tracking_uri:
            try:
                reports.tracked = TrackedRun(args.tracking_uri, args.experiment, recorded,
                                             run_tags(config, shard.world), output, resumed=saved is not None)
            except Exception as exc:  # noqa: BLE001 - an unreachable or unwritable store, before any training
                problem = f"tracking store {args.tracking_uri} cannot be used: {exc}"
    if not _all_ready(shard, problem is None, device):  # every process stops, not only the one that failed
        if problem is not None:
            reports.fail(problem)
        return 2
    outcome = "failed"
    try:
        code, outcome = _loop(config, saved, start, shard, reports, show_bar=not args.no_progress)
        return code
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    finally:
        if reports.tracked is not None:
            reports.tracked.finish(outcome)


def _all_ready(shard: Shard, ready: bool, device: torch.device) -> bool:
    """Whether every process is ready to train (each says whether it is): one that is not stops them all."""
    flag = torch.tensor(0 if ready else 1, device=device)
    return shard.sum(flag).item() == 0


def _resume_path(resume: Path | None, checkpoint: Path | None) -> Path | None:
    if resume is not RESUME_OWN:
        return resume
    if checkpoint is None:
        raise ValueError("--resume without a path continues from this run's checkpoint: give --output-dir or "
                         "--checkpoint (or --resume PATH)")
    return checkpoint


def _loop(config: TrainConfig, saved: dict[str, Any] | None, start: int, shard: Shard, reports: Reports,
          show_bar: bool) -> tuple[int, str]:
    """Train, reporting each evaluation and a summary; (exit status, outcome)."""
    name, device = config_net_name(config), resolve_device(config.run.device)
    local = config.optim.batch_size // shard.world
    workers = f", {shard.world} processes of {local} images" if shard.is_parallel else ""
    reports.say(f"training {name} on {config.data.dataset} for {config.optim.iterations} iterations "
                f"(device {device}, {resolve_precision(config.run.precision, device)}{workers})")
    clock, first, last = time.perf_counter(), None, None
    with progress_bar(config.optim.iterations, start, reports.lead and show_bar and sys.stderr.isatty()) as bar:
        try:
            for result in fit(config, resume=saved):
                bar.update(result.iteration - bar.n)
                reports.evaluation(result, bar.write, first=first is None)
                first = first or result
                last = result
        except (ValueError, CheckpointError, DatasetUnavailableError) as exc:
            reports.fail(str(exc))
            return 2, "failed"
    if last is None:  # resumed at or past its last iteration
        reports.say(f"nothing to train: the checkpoint is at iteration {start} of {config.optim.iterations}")
        return 0, "completed"
    say = reports.say
    say(f"\n{name} {last.status} at iteration {last.iteration} in {time.perf_counter() - clock:.1f}s")
    if last.status == "diverged":
        say("  the loss became non-finite: the run diverged (try a lower --lr or --warmup)")
        return 1, "diverged"
    m = last.metrics
    say(f"  training error {first.metrics['train/error']:.2f}% (first evaluation) -> {m['train/error']:.2f}% (last)")
    say(f"  test error {m['test/error']:.2f}%   throughput {m['perf/images_per_sec']:.0f} images/s")
    if "test/error_10crop" in m:
        say(f"  test top-1 / top-5 error: centre crop {m['test/error']:.2f}% / {m['test/top5_error']:.2f}%, "
            f"10-crop {m['test/error_10crop']:.2f}% / {m['test/top5_error_10crop']:.2f}%")
    if reports.output:
        o = reports.output
        say(f"  wrote {o.path}: {o.checkpoint.name}, {o.config.name}, {o.metrics.name}")
    return 0, "completed"


if __name__ == "__main__":
    sys.exit(main())
