"""A sweep's plan: the study's preset and the command line resolved into plain data, and checked.

``build_plan`` only resolves; ``check_plan`` only reads (the data files' checksums, the tracking store, an
earlier sweep of the same name); neither creates or changes anything. Runs in the driver.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs
from mlflow.exceptions import MlflowException

from resnet_core.config import TrainConfig, apply_overrides
from resnet_core.config import DataConfig
from resnet_core.data import DatasetUnavailableError, check_dataset, download_dataset
from resnet_core.device import check_device_assignment
from resnet_core.flags import overrides_from_args, refuse_unused_data_dir
from sweeps.driver.sweep_lock import check_sweep_unlocked
from sweeps.study import GridStudy, Preset
from tracking.spool import SPOOL_DIRNAME, node_spool_root
from tracking.system_metrics import DEFAULT_EVERY_S
from tracking.store import (TrackingError, absolute_tracking_uri, check_tracking_uri, filter_value,
                                   refuse_password, sqlite_path)
from tracking.sweep_run import (ConcurrentSweepError, EarlierSweep, concurrent_sweep_message,
                                       earlier_sweep, running_sweeps)
from sweeps.trial.identity import trial_config

PLAN_FILE = "sweep.json"  # in the sweep's Tune directory: what --resume compares its flags with
# What may differ on --resume (how the sweep reports and is watched, not what it trains).
SAFE_ON_RESUME = ("resume", "report", "report_path", "mlflow_ui_url", "system_metrics_every")
MIN_FREE_BYTES = 1 << 30  # free space a sweep needs where it writes (a paper-preset checkpoint is ~10 MB)
NOT_RECIPE = ("data.data_dir", "data.download")  # where data lives, not what the recipe is
# What the Tune trial's own process holds while its Ray Train workers train (sweeps/trial/workers.py): it only
# waits for them. Taken out of each worker's share of --cpus-per-trial, so that a trial asking for a node's every
# CPU fits it, and N workers on a node leave room for N coordinators (Ray may put any trial's there).
COORDINATOR_CPUS = 0.01
RAY_RESOURCE_UNIT = 1e-4  # Ray counts resources in fixed point of this unit


@dataclass
class SweepPlan:
    """Everything a sweep needs, resolved from the study, its preset and the flags (plain data)."""

    study: str
    preset: str
    recipe: str
    base: dict[str, Any]  # flat TrainConfig shared by all trials
    cell_overrides: list[dict[str, Any]]  # per cell of the grid, e.g. {"model.residual": False, "model.depth": 56}
    seeds: list[int]
    experiment: str
    tracking_uri: str
    storage_path: str
    cpus_per_trial: float  # the whole trial's: split evenly among its workers
    gpus_per_trial: float
    workers_per_trial: int = 1  # > 1: data-parallel Ray Train workers (sweeps/trial/workers.py)
    max_concurrent: int | None = None
    max_failures: int = 2
    resume: bool = False
    report: bool = True
    report_path: str = ""
    report_sections: tuple[str, ...] = ()
    mlflow_ui_url: str | None = None
    system_metrics_every: float = DEFAULT_EVERY_S  # seconds between a trial's system-metrics samples; 0: off
    extra_params: dict[str, Any] = field(default_factory=dict)  # the parent run's params beyond the config

    def configs(self) -> list[TrainConfig]:
        """The TrainConfig of every trial (validates each one)."""
        return [trial_config({**self.base, **cell, "run.seed": seed})
                for cell in self.cell_overrides for seed in self.seeds]

    def data_configs(self) -> list[DataConfig]:
        """Each distinct data set the trials read (most sweeps: one)."""
        return list({json.dumps(asdict(c.data), sort_keys=True): c.data for c in self.configs()}.values())

    @property
    def worker_request(self) -> dict[str, float]:
        """What each Ray process of a trial holds: the whole trial, or one of its ``workers_per_trial`` workers
        (the trial's CPUs and GPUs split evenly among them, less a coordinator's CPU from each worker's share).
        Rounded down to Ray's resource unit, so that N workers and their coordinator never add up to more than
        the trial asked for."""
        n = self.workers_per_trial
        if n == 1:
            return {"CPU": self.cpus_per_trial, "GPU": self.gpus_per_trial}
        cpus = math.floor((self.cpus_per_trial / n - COORDINATOR_CPUS) / RAY_RESOURCE_UNIT + 1e-6) * RAY_RESOURCE_UNIT
        return {"CPU": round(cpus, 4), "GPU": self.gpus_per_trial / n}

    @property
    def sweep_id(self) -> str:
        """Identifies the sweep across driver restarts: its Tune experiment directory."""
        return f"{self.storage_path.rstrip('/')}/{self.experiment}"

    @property
    def spool_dir(self) -> str:
        """Where trials keep tracking calls the store did not take (sent later; see sweeps.resend)."""
        if self.is_local_storage:
            return str(Path(self.sweep_id) / SPOOL_DIRNAME)
        return str(node_spool_root() / self.experiment)

    @property
    def is_local_storage(self) -> bool:
        return "://" not in self.storage_path


def default_home() -> Path:
    """Where the embedded MLflow store and Tune results go by default.

    The directory the sweep was launched from; under ``ray job submit --working-dir`` that directory is a
    temporary copy Ray deletes, so there the default is ``~/resnet-studies`` instead.
    """
    cwd = Path.cwd().resolve()
    if "runtime_resources" in cwd.parts or os.environ.get("RAY_JOB_SUBMISSION_ID"):
        return Path.home() / "resnet-studies"
    return cwd


def build_plan(study: GridStudy, args: argparse.Namespace, preset: Preset) -> SweepPlan:
    """Resolve the preset and the flags into a SweepPlan (raises ValueError on bad input; changes nothing)."""
    home = default_home()
    given = {**overrides_from_args(args), **parse_settings(args.set)}
    base = apply_overrides({**TrainConfig().to_dict(), **preset.config}, given)
    refuse_unused_data_dir(given, base)
    base["data.data_dir"] = str(Path(base["data.data_dir"]).expanduser().resolve())
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else preset.cpus_per_trial
    workers = getattr(args, "workers_per_trial", None)  # a search study has no --workers-per-trial
    workers = preset.workers_per_trial if workers is None else workers
    base["run.threads"] = base["run.threads"] or max(1, int(cpus / max(workers, 1)))  # each worker's
    base = TrainConfig.from_dict(base).to_dict()  # validates every shared field, names the bad one

    chosen = {axis.name: axis.parse(getattr(args, axis.flag[2:])) for axis in study.axes
              if getattr(args, axis.flag[2:]) is not None}
    cell_overrides = [study.trial_overrides(preset, cell) for cell in study.cells(preset, chosen)]
    # Deepest (longest) trials first: Tune starts them in this order, and the short ones then fill the gaps,
    # instead of one long trial running alone at the end while the other slots idle.
    cell_overrides.sort(key=lambda cell: -cell.get("model.depth", base["model.depth"]))
    seeds = getattr(args, "seeds", None)  # a search study has no --seeds: its search trials use the preset's
    seeds = preset.seeds if seeds is None else seeds
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    if not args.experiment.strip():
        raise ValueError("--experiment must not be empty")
    storage = args.storage_path or str(home / "ray_results")
    tracking_uri = absolute_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                                         or f"sqlite:///{home / 'mlflow.db'}")
    refuse_password(tracking_uri, "the tracking URI", "give the server's URL without it and set "
                    "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) instead")
    return SweepPlan(
        study=study.name, preset=preset.name, recipe=recipe_of(preset, base), base=base,
        cell_overrides=cell_overrides,
        seeds=list(range(seeds)), experiment=args.experiment, tracking_uri=tracking_uri,
        storage_path=storage if "://" in storage else str(Path(storage).expanduser().resolve()),
        cpus_per_trial=cpus,
        gpus_per_trial=args.gpus_per_trial if args.gpus_per_trial is not None else preset.gpus_per_trial,
        workers_per_trial=workers,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures, resume=args.resume,
        report=args.report, report_path=args.report_path or str(home / "reports" / f"{args.experiment}.html"),
        report_sections=study.report_sections, mlflow_ui_url=args.mlflow_ui_url,
        system_metrics_every=args.system_metrics_every,
    )


def parse_settings(items: list[str]) -> dict[str, str]:
    """``--set KEY=VALUE`` items as flat overrides (values are typed and validated by TrainConfig)."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE; got {item!r}")
        settings[key] = value
    return settings


def recipe_of(preset: Preset, base: dict[str, Any]) -> str:
    """"paper" when the trials train with the paper preset's recipe, else "reduced".

    Compares the fields that define training (model, data, optimisation, precision), not where the data lives
    or how a run executes (threads, device, evaluation cadence).
    """
    if preset.recipe != "paper":
        return preset.recipe
    reference = TrainConfig.from_dict({**TrainConfig().to_dict(), **preset.config}).to_dict()
    defining = [k for k in reference if k not in NOT_RECIPE and (not k.startswith("run.") or k == "run.precision")]
    return "paper" if all(base[k] == reference[k] for k in defining) else "reduced"


class InterruptedSweepError(ValueError):
    """An earlier sweep of the same name was interrupted, and this command does not say --resume."""

    def __init__(self, plan: SweepPlan, earlier: EarlierSweep):
        self.earlier = earlier
        super().__init__(
            f"the sweep of experiment {plan.experiment!r} under {plan.storage_path} was interrupted before it "
            f"finished (its driver is gone). Continue it with --resume (finished trials are kept, unfinished ones "
            f"continue from their last checkpoint), or start a separate sweep with another --experiment or "
            f"--storage-path")


def check_plan(plan: SweepPlan) -> None:
    """Reject a plan that cannot run, before anything starts; reads only. Raises ValueError naming the problem
    (InterruptedSweepError when an earlier sweep of the same name needs --resume)."""
    check_names(plan)
    check_trials(plan)
    try:
        for data in plan.data_configs():
            check_dataset(data)
        check_tracking_uri(plan.tracking_uri)
    except (DatasetUnavailableError, TrackingError) as exc:
        raise ValueError(str(exc)) from None
    check_disk_space(plan)
    check_sweep_unlocked(plan)  # before the heartbeat's verdict: a live driver's may be old after an outage
    check_earlier_sweep(plan)
    if plan.resume:
        check_resume_matches(plan)


def check_names(plan: SweepPlan) -> None:
    """The experiment name and storage path as MLflow's search filters can match them: the sweep's parent run is
    found by its sweep_id (``storage_path/experiment``), which must not hold both quote characters. Reads nothing."""
    try:
        filter_value(plan.sweep_id)
    except ValueError as exc:
        raise ValueError(f"--experiment {plan.experiment!r} under --storage-path {plan.storage_path!r}: the sweep's "
                         f"id {exc}") from None


def check_trials(plan: SweepPlan) -> None:
    """The trials' own settings, whatever machine runs them: some trials, their resources, devices and workers.
    Reads nothing (what --plan-only checks before it places them)."""
    if not plan.cell_overrides or not plan.seeds:
        raise ValueError("the sweep has no trials: give at least one value of every axis and a seed")
    configs = plan.configs()
    if plan.cpus_per_trial <= 0 or plan.gpus_per_trial < 0:
        raise ValueError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0; got "
                         f"{plan.cpus_per_trial}, {plan.gpus_per_trial}")
    for device in sorted({c.run.device for c in configs}):
        check_device_assignment(device, plan.gpus_per_trial > 0)
    check_workers(plan, configs)
    if plan.max_concurrent is not None and plan.max_concurrent < 1:
        raise ValueError(f"--max-concurrent must be >= 1; got {plan.max_concurrent}")
    if plan.system_metrics_every < 0:
        raise ValueError(f"--system-metrics-every must be >= 0 (0: off); got {plan.system_metrics_every:g}")


def download_data(plan: SweepPlan) -> None:
    """Download, once and in the driver, every data set the plan asks to download (``data.download``), before
    any trial starts: trials sharing the data directory then find it there instead of all fetching it at once.
    Raises ValueError when a download fails."""
    for data in (d for d in plan.data_configs() if d.download):
        print(f"downloading {data.dataset} into {data.data_dir} (once, before any trial starts)", flush=True)
        try:
            download_dataset(data)
        except DatasetUnavailableError as exc:
            raise ValueError(str(exc)) from None


def check_workers(plan: SweepPlan, configs: list[TrainConfig]) -> None:
    """A multi-worker trial must split into whole workers: each its own whole GPUs (NCCL runs one process per
    GPU) and an equal slice of every batch."""
    n = plan.workers_per_trial
    if n < 1:
        raise ValueError(f"--workers-per-trial must be >= 1; got {n}")
    if n == 1:
        return
    if plan.worker_request["CPU"] <= 0:
        raise ValueError(f"--cpus-per-trial {plan.cpus_per_trial:g} leaves no CPU for {n} workers (--workers-per-"
                         f"trial {n}) beside the trial's coordinator ({COORDINATOR_CPUS} CPU): give more")
    gpus_each = plan.gpus_per_trial / n
    if gpus_each and (gpus_each < 1 or gpus_each != int(gpus_each)):
        raise ValueError(f"--gpus-per-trial {plan.gpus_per_trial:g} does not split into {n} workers of whole GPUs "
                         f"(--workers-per-trial {n}): give 0 (CPU workers) or a multiple of {n}, e.g. "
                         f"--gpus-per-trial {n} for one GPU per worker")
    for batch in sorted({c.optim.batch_size for c in configs}):
        if batch % n:
            raise ValueError(f"optim.batch_size={batch} does not split evenly among --workers-per-trial {n} "
                             f"(each worker trains on batch / {n} images): choose a batch size that is a multiple "
                             f"of {n}, or another number of workers")


def check_disk_space(plan: SweepPlan) -> None:
    """Refuse to start when a local directory the sweep writes to (Tune's storage with its checkpoints, a SQLite
    store with its artifacts) has less than MIN_FREE_BYTES free: a full disk mid-sweep loses checkpoints and
    tracking calls. Reads only."""
    places = [Path(plan.storage_path)] if plan.is_local_storage else []
    if (store := sqlite_path(plan.tracking_uri)) is not None:
        places.append(store.parent)
    for place in places:
        existing = next((p for p in (place, *place.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        if free < MIN_FREE_BYTES:
            raise ValueError(f"only {free / 2**30:.2f} GiB free at {existing} (for {place}); a sweep needs at least "
                             f"{MIN_FREE_BYTES / 2**30:.0f} GiB there for its checkpoints, store and spool: free "
                             f"some space or choose another --storage-path / --tracking-uri")


def check_earlier_sweep(plan: SweepPlan) -> None:
    """Refuse to run beside another running sweep of the same experiment (one sweep per experiment at a time),
    or over an interrupted one of the same name without --resume (its progress would be abandoned)."""
    if (store := sqlite_path(plan.tracking_uri)) is not None and not store.exists():
        return
    try:
        running = running_sweeps(plan.tracking_uri, plan.experiment)
        earlier = earlier_sweep(plan.tracking_uri, plan.experiment, plan.sweep_id)
    except MlflowException as exc:
        raise ValueError(f"cannot read the tracking store {plan.tracking_uri}: {exc}") from None
    if running:
        raise ConcurrentSweepError(concurrent_sweep_message(plan.experiment, running[0]))
    if earlier is not None and earlier.interrupted and not plan.resume:
        raise InterruptedSweepError(plan, earlier)


def _plan_file(plan: SweepPlan) -> tuple[pyarrow.fs.FileSystem, str]:
    filesystem, path = pyarrow.fs.FileSystem.from_uri(plan.sweep_id)
    return filesystem, f"{path.rstrip('/')}/{PLAN_FILE}"


def save_plan(plan: SweepPlan) -> None:
    """Keep the plan beside the sweep's Tune state, for a later --resume to compare with."""
    filesystem, path = _plan_file(plan)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as out:
        out.write(json.dumps(asdict(plan), indent=2, default=str).encode())


def check_resume_matches(plan: SweepPlan) -> None:
    """Refuse --resume with settings other than the interrupted sweep's (Tune would silently keep the old)."""
    filesystem, path = _plan_file(plan)
    if filesystem.get_file_info(path).type != pyarrow.fs.FileType.File:
        return  # nothing to resume: the sweep starts anew (run_sweep says so)
    with filesystem.open_input_stream(path) as source:
        saved = json.loads(source.read())
    saved.setdefault("cell_overrides", saved.pop("archs", None))  # a sweep started before the rename
    saved.setdefault("workers_per_trial", 1)  # ... or before trials could be several workers
    current = json.loads(json.dumps(asdict(plan), default=str))
    differ = [f"{key}: {then!r} then, {now!r} now" for key, then, now in _differences(saved, current)
              if key.split(".")[0] not in SAFE_ON_RESUME]
    if differ:
        raise ValueError("--resume continues the sweep with the settings it started with, but these differ: "
                         + "; ".join(differ) + ". Repeat the original command with --resume (only "
                         + ", ".join(SAFE_ON_RESUME[1:]) + " may change), or start a new sweep with another "
                         "--experiment")


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, saved value, current value) for each setting that differs; the shared config key by key."""
    differ = []
    for key, now in current.items():
        then = saved.get(key)
        if isinstance(now, dict) and isinstance(then, dict) and key == "base":
            differ += [(k, then.get(k), v) for k, v in now.items() if then.get(k) != v]
        elif then != now:
            differ.append((key, then, now))
    return differ
