"""A trial that trains as N data-parallel Ray Train workers (``--workers-per-trial N``): Ray Train's
``TorchTrainer`` launched from the Tune trial, as Ray's Train + Tune guide describes.

The Tune trial's process only coordinates: it starts the Train run and waits. Each worker runs ``fit`` on its
slice of every batch (resnet_core/parallel.py: DDP over gloo on CPUs, NCCL on GPUs). Rank 0 is the trial as a
single-process trial would be (sweeps/trial/trainable.py's ``run_trial``): the only MLflow writer, found by the
Tune trial id, and the only one to save checkpoints, into the sweep's storage; its reports reach Tune through
``TuneReportCallback``. The other ranks train and report only the evaluation, as Ray Train's collective
``report`` wants every rank to.

Failures: a worker that dies (its process or its node), or raises, fails the Train run at once (Ray Train's
``FailureConfig(max_failures=0)``) and so the Tune trial, which Tune retries (``--max-failures``): the new Train
run has the same name and storage, so it restarts every worker from the last checkpoint Ray Train registered there
(it reads its snapshot), as does a trial continued by ``--resume`` after the driver died; rank 0 then reopens the
same MLflow run and skips the steps it already holds. Retrying at one level only: a deterministic error is tried
``--max-failures`` + 1 times, not (``--max-failures`` + 1)² as with Ray Train retrying inside each Tune attempt.
A newest checkpoint that cannot be read is refused for the older one kept beside it (``restore``).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from resnet_core import fit
from resnet_core.device import assigned_device
from tracking.store import bound_http_retries
from tracking.system_metrics import STOP_WAIT_S, system_metrics
from tracking.trial_run import TrialTracking, find_trial_run
from sweeps.trial.identity import trial_config
from sweeps.trial.trainable import TrialHooks, evaluation_report, quiet_checkpoint_logs, restore, run_trial

FIND_RUN_S = 300.0  # how long another rank looks for the run rank 0 opens (rank 0 waits out outages itself)


@dataclass(frozen=True)
class Workers:
    """How a trial spreads over Ray Train workers: how many, what each holds, where their checkpoints go."""

    count: int
    cpus_each: float
    gpus_each: float
    storage_path: str  # the sweep's storage: every node must reach it (checked by the driver)
    placement_strategy: str = "PACK"  # Ray Train's (sweeps/driver/resources.py: worker_placement)


class TrainSession:
    """Rank 0 of a trial's workers, as ``run_trial`` sees it: Ray Train's checkpoint and report."""

    def __init__(self, trial_id: str):
        self.trial_id = trial_id

    def get_checkpoint(self) -> ray.train.Checkpoint | None:
        return ray.train.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint: ray.train.Checkpoint | None = None) -> None:
        ray.train.report(metrics, checkpoint=checkpoint)

    def checkpoint_of(self, directory: str) -> ray.train.Checkpoint:
        return ray.train.Checkpoint.from_directory(directory)


def train_on_workers(config: dict[str, Any], tracking: TrialTracking, sweep_env: dict[str, Any], workers: Workers,
                     hooks: TrialHooks | None = None) -> None:
    """Tune function trainable of a multi-worker trial (bind everything but ``config`` with
    ``tune.with_parameters``): one Ray Train run named after the Tune trial, whose rank 0 reports to Tune."""
    trial_id = tune.get_context().get_trial_id()
    resources = {"CPU": workers.cpus_each, **({"GPU": workers.gpus_each} if workers.gpus_each else {})}
    trainer = ray.train.torch.TorchTrainer(
        _worker,
        train_loop_config={"config": config, "trial_id": trial_id, "tracking": tracking, "sweep_env": sweep_env,
                           "hooks": hooks},
        scaling_config=ray.train.ScalingConfig(num_workers=workers.count, use_gpu=workers.gpus_each > 0,
                                               resources_per_worker=resources,
                                               placement_strategy=workers.placement_strategy),
        run_config=ray.train.RunConfig(
            name=f"workers-{trial_id}", storage_path=workers.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=0),  # Tune retries the trial (module docstring)
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2), callbacks=[TuneReportCallback()]),
        torch_config=ray.train.torch.TorchConfig(backend="nccl" if workers.gpus_each else "gloo"))
    trainer.fit()


def _worker(loop_config: dict[str, Any]) -> None:
    """One worker: rank 0 runs the trial (tracking, checkpoints), the others train beside it."""
    quiet_checkpoint_logs()
    config = loop_config["config"]
    device = assigned_device(config.get("run.device", "auto"), has_gpu=bool(ray.get_gpu_ids()))
    if device.startswith("cuda"):  # workers on one node may see each other's GPUs: use this worker's own
        own = ray.train.torch.get_device()
        torch.cuda.set_device(own)  # NCCL's collectives run on the current device
        device = str(own)
    context = ray.train.get_context()
    if context.get_world_rank() == 0:
        world = context.get_world_size()
        tags = {"workers": str(world), "worker_batch_size": str(trial_config(config).optim.batch_size // world)}
        run_trial(config, loop_config["tracking"], loop_config["sweep_env"], loop_config["hooks"],
                  TrainSession(loop_config["trial_id"]), device, tags)
    else:
        with _worker_system_metrics(loop_config["tracking"], loop_config["trial_id"], context.get_world_rank()):
            _follow(config, TrainSession(loop_config["trial_id"]), device)


@contextlib.contextmanager
def _worker_system_metrics(tracking: TrialTracking, trial_id: str, rank: int) -> Iterator[None]:
    """A rank other than 0 samples its own machine into the trial's run too, as ``system/worker_<rank>/...``,
    once rank 0 has opened the run (found by trial id, for at most FIND_RUN_S); training never waits for it."""
    if tracking.system_metrics_every <= 0:
        yield
        return
    stop = threading.Event()

    def sample() -> None:
        bound_http_retries(tracking.tracking_uri)
        client, run, deadline = MlflowClient(tracking.tracking_uri), None, time.monotonic() + FIND_RUN_S
        while run is None and not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # the store may be down: rank 0 copes with that, this only waits
                run = find_trial_run(client, tracking, trial_id)
            if run is None:
                stop.wait(2.0)
        if run is not None:
            with system_metrics(tracking.tracking_uri, run.info.run_id, tracking.system_metrics_every,
                                node_id=f"worker_{rank}"):
                stop.wait()

    thread = threading.Thread(target=sample, daemon=True, name="worker-system-metrics")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(STOP_WAIT_S + 1.0)


def _follow(config: dict[str, Any], session: TrainSession, device: str) -> None:
    """A rank other than 0: train from the checkpoint rank 0 resumes from, and report each evaluation (Ray Train's
    report is collective) without a checkpoint; nothing is logged."""
    state, _, _ = restore(session)
    run_config = trial_config(config).replace(**{"run.device": device})
    for result in fit(run_config, resume=state):
        session.report(evaluation_report(result, math.nan))
