"""The command line every study shares: ``python sweeps/<study>.py [flags]``. Runs in the driver.

The flags come from the study (its axes and presets) and from TrainConfig's field metadata (help, types and
validation in one place, resnet_core/config.py). The one place that tells a grid study from a search study
(``driver_for``): everything below it is either shared or belongs to one of the two. Exit codes: 0 all trials finished, 1 some trial errored,
2 bad input or an unsuitable cluster (nothing was started), 3 the tracking store missed data (spooled),
4 interrupted by Ctrl-C or SIGTERM (``ray job stop``): its state is saved, ``--resume`` continues it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import ray

from resnet_core.flags import add_config_arguments
from sweeps.driver.grid import run_sweep, sweep_status
from sweeps.driver.plan import (SAFE_ON_RESUME, InterruptedSweepError, SweepPlan, build_plan, check_plan,
                                download_data)
from sweeps.driver.cluster_shape import SPEC_HELP, parse_cluster
from sweeps.driver.node_data import check_data_on_nodes
from sweeps.driver.planner import run_plan_only
from sweeps.driver.resources import check_cluster
from sweeps.driver.search.flags import add_search_arguments, check_search_plan, search_plan
from sweeps.driver.search.stages import run_search
from sweeps.driver.security import (check_private_storage, check_ray_security, check_tracking_security,
                                    security_lines)
from sweeps.study import GridStudy, Preset, SearchStudy
from sweeps.trial.trainable import TrialHooks
from tracking.store import TrackingError
from tracking.system_metrics import DEFAULT_EVERY_S
from tracking.sweep_run import ConcurrentSweepError, close_interrupted_sweep


def study_arg_parser(study: GridStudy) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python sweeps/{study.name}.py", description=study.description)
    presets = "; ".join(f"{p.name}: {p.description}" for p in study.presets.values())
    parser.add_argument("--preset", choices=sorted(study.presets),
                        help=f"{presets}. Default: paper when the Ray cluster has GPUs, else smoke")
    grid = parser.add_argument_group("what varies (comma-separated; default: the preset's)")
    for axis in study.axes:
        grid.add_argument(axis.flag, dest=axis.flag[2:], help=axis.help + (
            f" (from {','.join(axis.settings)})" if axis.settings else ""))
    driver_for(study).add_arguments(parser, grid, study)
    add_config_arguments(parser, keys=study.config_flags, default_help="the preset's")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainConfig field for every trial, e.g. --set optim.weight_decay=5e-4")
    resources = parser.add_argument_group("resources")
    resources.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions let several small nets "
                                                                "share a GPU (default: the preset's)")
    resources.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the preset's)")
    if driver_for(study) is GRID:  # a search trains each trial in one process
        resources.add_argument("--workers-per-trial", type=int, help=(
            "data-parallel Ray Train workers per trial (default: the preset's; 1 trains each trial in one process). "
            "With N > 1 a trial's --cpus-per-trial and --gpus-per-trial are split evenly among its N workers "
            "(--gpus-per-trial 8 --workers-per-trial 8: one GPU each, NCCL; no GPUs: gloo on CPUs) and "
            "optim.batch_size stays the whole batch, each worker training on batch / N (its BatchNorm batch)"))
    resources.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: as many "
                                                              "as the resources allow)")
    resources.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its last "
                                                                       "checkpoint (default: 2)")
    resources.add_argument("--plan-only", action="store_true", help=(
        "print every trial's resource request, which trials run at once on which node type and a forecast, "
        "then exit without training (0: everything fits; 2: refused, naming the flag to change)"))
    resources.add_argument("--assume-cluster", metavar="SPEC", help=f"with --plan-only: plan for this cluster "
                                                                    f"instead of the connected one: {SPEC_HELP}")
    tracking = parser.add_argument_group("tracking and results")
    tracking.add_argument("--experiment", default=study.name, help=f"MLflow experiment and Tune run name "
                                                                   f"(default: {study.name})")
    tracking.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                                 "sqlite:///<launch dir>/mlflow.db)")
    tracking.add_argument("--storage-path", help="where Tune keeps trial checkpoints and state (default: "
                                                 "<launch dir>/ray_results; shared storage on a multi-node cluster)")
    tracking.add_argument("--resume", action="store_true", help=(
        "continue the interrupted sweep of the same --experiment and --storage-path (the driver was killed, the "
        "machine rebooted): finished trials are kept, unfinished ones continue from their last checkpoint, in the "
        "same MLflow runs. Give the original command's flags: a different setting is refused, except "
        f"{', '.join(RESUME_FLAGS[s] for s in SAFE_ON_RESUME[1:])}. Without --resume, an "
        "interrupted sweep is reported and nothing starts"))
    tracking.add_argument("--no-report", dest="report", action="store_false", help="do not build the HTML report")
    tracking.add_argument("--report-path", help="where to write the report (default: <launch dir>/reports/"
                                                "<experiment>.html)")
    tracking.add_argument("--insecure-tracking", action="store_true", help=(
        "send to a plain-http tracking server on another host without credentials (refused by default: set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD for a server with auth)"))
    tracking.add_argument("--insecure-ray", action="store_true", help=(
        "join a Ray cluster (RAY_ADDRESS) that does not use token authentication (refused by default: anyone who "
        "reaches such a cluster can run code on its nodes; see cluster/README.md)"))
    tracking.add_argument("--system-metrics-every", type=float, default=DEFAULT_EVERY_S, metavar="SECONDS", help=(
        "sample each trial's CPU, memory, disk, network and GPU use into its MLflow run every SECONDS (MLflow's "
        f"system-metrics monitor; GPUs need the `gpu` extra, nvidia-ml-py); 0 turns it off (default: "
        f"{DEFAULT_EVERY_S:g})"))
    tracking.add_argument("--mlflow-ui-url", help="link each run in the report to its page in this MLflow UI, "
                                                  "e.g. http://127.0.0.1:5000")
    return parser


# The flag of each plan field that may change on --resume (sweeps.driver.plan.SAFE_ON_RESUME).
RESUME_FLAGS = {"resume": "--resume", "report": "--no-report", "report_path": "--report-path",
                "mlflow_ui_url": "--mlflow-ui-url", "system_metrics_every": "--system-metrics-every"}


def choose_preset(study: GridStudy, name: str | None) -> tuple[Preset, str]:
    """The preset asked for, or the one that suits the connected cluster; returns it and why."""
    if name:
        return study.preset(name), "--preset given"
    connect_ray()
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and "paper" in study.presets:
        return study.presets["paper"], f"the Ray cluster has {gpus:g} GPU(s)"
    return study.presets["smoke"], "the Ray cluster has no GPU"


def plan_from_argv(study: GridStudy, argv: list[str]) -> SweepPlan:
    """The plan a study's command line would run (``--preset`` required: no cluster is consulted); unchecked."""
    args = study_arg_parser(study).parse_args(argv)
    if args.preset is None:
        raise ValueError(f"--preset is required here; choose one of {sorted(study.presets)}")
    return resolve_plan(study, args, study.preset(args.preset))


def resolve_plan(study: GridStudy, args: argparse.Namespace, preset: Preset) -> SweepPlan:
    """The plan of the flags ``args`` on top of ``preset`` (raises ValueError on bad input; changes nothing)."""
    return driver_for(study).resolve(build_plan(study, args, preset), study, args, preset)


def connect_ray() -> None:
    """Join the cluster in RAY_ADDRESS (set by ``ray job submit``), else start an embedded local Ray."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    ray.init(address=address, include_dashboard=False if not address else None, logging_level="WARNING",
             log_to_driver=True)


def main(study: GridStudy, argv: list[str] | None = None, hooks: TrialHooks | None = None) -> int:
    """The whole command line of a study (``hooks``: see sweeps.trial.trainable.TrialHooks; tests only)."""
    parser = study_arg_parser(study)
    args = parser.parse_args(argv)
    if args.assume_cluster and not args.plan_only:
        parser.error("--assume-cluster plans only: add --plan-only")
    if args.plan_only:
        return plan_only(study, args)
    try:
        plan = announced_plan(study, args)
        check_tracking_security(plan, args.insecure_tracking)
        check_ray_security(args.insecure_ray)
        check_private_storage(plan)
        driver_for(study).check(plan)
        connect_ray()
        check_cluster(plan)
        download_data(plan)
        check_data_on_nodes(plan)
        print("\n".join(security_lines(plan, args.insecure_tracking)), flush=True)
    except InterruptedSweepError as exc:
        closed = close_interrupted_sweep(plan.tracking_uri, exc.earlier)
        note = f" Its {len(closed)} trial run(s) left RUNNING are now marked KILLED." if closed else ""
        print(f"error: {exc}.{note}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    driver = driver_for(study)
    try:
        with stopping_on_sigterm():
            results = driver.run(plan, hooks)
    except TrackingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except ConcurrentSweepError as exc:  # lost a race to start beside another sweep: nothing ran
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if driver.interrupted(results):
        print("the sweep was interrupted: finished trials are kept and its state is saved; continue it with the "
              "same command and --resume", file=sys.stderr)
        return 4
    return 0 if not results.errors else 1


def plan_only(study: GridStudy, args: argparse.Namespace) -> int:
    """``--plan-only``: the plan placed on the assumed (or the connected) cluster by Ray, nothing trained."""
    try:
        types = parse_cluster(args.assume_cluster) if args.assume_cluster else None
        if types is None:
            connect_ray()
        return run_plan_only(types, lambda: announced_plan(study, args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def announced_plan(study: GridStudy, args: argparse.Namespace) -> SweepPlan:
    """The plan of ``args`` on the preset they name or the connected cluster suits, saying which and why."""
    preset, why = choose_preset(study, args.preset)
    others = ", ".join(f"--preset {name}" for name in study.presets if name != preset.name)
    announcement = f"preset: {preset.name} ({why}): {preset.description}"
    try:
        plan = resolve_plan(study, args, preset)
    except ValueError:  # still say which preset the refused flags were read against
        print(f"{announcement} (or {others})", flush=True)
        raise
    print(f"{announcement}; {len(plan.configs())} trials (or {others})", flush=True)
    return plan


@contextlib.contextmanager
def stopping_on_sigterm() -> Iterator[None]:
    """SIGTERM (what ``ray job stop`` and process managers send) stops the sweep as Ctrl-C does: Tune saves its
    state, the trial runs and the parent run end KILLED, the spool is sent, and ``--resume`` continues it.

    Installed after ``ray.init``, whose own handler would abort the driver with a stack dump; the handler it
    replaces is put back afterwards (Ray's native one, not visible to Python, as the default action).
    """
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield
        return

    def as_ctrl_c(signum: int, frame: Any) -> None:
        print("\nSIGTERM received: stopping the sweep as Ctrl-C would", file=sys.stderr, flush=True)
        handler = signal.getsignal(signal.SIGINT)  # Tune's graceful stop while it runs
        if not callable(handler):
            raise KeyboardInterrupt
        handler(signal.SIGINT, frame)

    previous = signal.signal(signal.SIGTERM, as_ctrl_c)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@dataclass(frozen=True)
class StudyDriver:
    """What differs between a grid study and a search study in the driver: their flags, plan, checks and run."""

    add_arguments: Callable[[argparse.ArgumentParser, Any, Any], None]  # (parser, axes' group, study)
    resolve: Callable[[SweepPlan, Any, argparse.Namespace, Any], SweepPlan]  # (plan, study, args, preset)
    check: Callable[[Any], None]  # reads only; raises ValueError
    run: Callable[[Any, TrialHooks | None], Any]  # results with ``.errors``
    interrupted: Callable[[Any], bool]  # whether those results are of a sweep stopped part-way


def _add_seeds(parser: argparse.ArgumentParser, axes: Any, study: GridStudy) -> None:
    axes.add_argument("--seeds", type=int, help="seeds per configuration: 0..N-1 (default: the preset's)")


def _check_search(plan: Any) -> None:
    check_plan(plan)
    check_search_plan(plan)


GRID = StudyDriver(add_arguments=_add_seeds, resolve=lambda plan, *_: plan, check=check_plan, run=run_sweep,
                   interrupted=lambda results: sweep_status(results) == "KILLED")
SEARCH = StudyDriver(add_arguments=lambda parser, axes, study: add_search_arguments(parser, study),
                     resolve=search_plan, check=_check_search, run=run_search,
                     interrupted=lambda results: results.interrupted)


def driver_for(study: GridStudy) -> StudyDriver:
    """The one place that tells the two kinds of study apart."""
    return SEARCH if isinstance(study, SearchStudy) else GRID
