"""The command line every study script shares: presets, grid, resources, tracking, resume."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import ray

from resnet_core.config import TrainConfig, scaled_milestones
from sweeps.presets import PRESETS, Preset, get_preset
from sweeps.runner import FAMILIES, SweepPlan, run_sweep
from sweeps.tracking import TrackingError, absolute_tracking_uri, sqlite_path


def default_home() -> Path:
    """Where the embedded MLflow store and Tune results go by default.

    The directory the sweep was launched from; under ``ray job submit --working-dir`` that directory is a
    temporary copy Ray deletes, so there the default is ``~/resnet-studies`` instead.
    """
    cwd = Path.cwd().resolve()
    if "runtime_resources" in cwd.parts or os.environ.get("RAY_JOB_SUBMISSION_ID"):
        return Path.home() / "resnet-studies"
    return cwd


def study_arg_parser(study: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python sweeps/{study}.py", description=description)
    presets = "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
    parser.add_argument("--preset", help=f"{presets}. Default: paper when the Ray cluster has GPUs, else smoke")
    parser.add_argument("--depths", help="comma-separated depths, e.g. 20,32,44,56 (default: the preset's)")
    parser.add_argument("--families", help=f"comma-separated, from {','.join(FAMILIES)} (default: the preset's)")
    parser.add_argument("--seeds", type=int, help="seeds per configuration: 0..N-1 (default: the preset's)")
    parser.add_argument("--shortcut", help="shortcut option A, B or C for the residual nets (default: A)")
    parser.add_argument("--dataset", help="cifar10, cifar100, digits or synthetic (default: the preset's)")
    parser.add_argument("--data-dir", help="directory holding the CIFAR files (default: ./data)")
    parser.add_argument("--iterations", type=int, help="training iterations per trial; the lr milestones "
                                                       "scale with it (default: the preset's)")
    parser.add_argument("--eval-every", type=int, help="iterations between evaluations (default: the preset's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other TrainConfig field for every trial, e.g. --set optim.weight_decay=5e-4")
    parser.add_argument("--gpus-per-trial", type=float, help="GPUs per trial; fractions let several small nets "
                                                             "share a GPU (default: the preset's)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: the preset's)")
    parser.add_argument("--max-concurrent", type=int, help="at most this many trials at once (default: as "
                                                           "many as the resources allow)")
    parser.add_argument("--max-failures", type=int, default=2, help="retries of a crashed trial from its last "
                                                                    "checkpoint (default: 2)")
    parser.add_argument("--experiment", default=study, help=f"MLflow experiment and Tune run name (default: {study})")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                               "sqlite:///<launch dir>/mlflow.db)")
    parser.add_argument("--storage-path", help="where Tune keeps trial checkpoints and state (default: "
                                               "<launch dir>/ray_results; shared storage on a multi-node cluster)")
    parser.add_argument("--resume", action="store_true", help="continue the sweep of the same --experiment "
                                                              "and --storage-path after an interruption (the "
                                                              "driver was killed, the machine rebooted): "
                                                              "finished trials are kept, unfinished ones continue "
                                                              "from their last checkpoint, in the same MLflow runs. "
                                                              "Required: without it, an interrupted sweep is "
                                                              "reported and nothing starts")
    parser.add_argument("--no-report", action="store_true", help="do not build the HTML report at the end")
    parser.add_argument("--report-path", help="where to write the report (default: <launch dir>/reports/<experiment>.html)")
    return parser


def choose_preset(args: argparse.Namespace) -> tuple[Preset, str]:
    """The preset asked for, or the one that suits the connected cluster; returns it and why."""
    if args.preset:
        return get_preset(args.preset), "--preset given"
    gpus = ray.cluster_resources().get("GPU", 0)
    if gpus:
        return PRESETS["paper"], f"the Ray cluster has {gpus:g} GPU(s)"
    return PRESETS["smoke"], "the Ray cluster has no GPU"


def _split(text: str | None, kind: type, flag: str) -> list[Any] | None:
    if text is None:
        return None
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} must be comma-separated {kind.__name__}s; got {text!r}") from None
    if not values:
        raise ValueError(f"{flag} is empty")
    return values


def build_plan(study: str, args: argparse.Namespace, preset: Preset) -> SweepPlan:
    """Resolve preset + flags into a SweepPlan and check it (raises ValueError on bad input)."""
    home = default_home()
    base = {**TrainConfig().to_dict(), **preset.config}
    for flag, key in (("dataset", "data.dataset"), ("data_dir", "data.data_dir"), ("eval_every", "run.eval_every")):
        if getattr(args, flag) is not None:
            base[key] = getattr(args, flag)
    if args.iterations is not None:
        if args.iterations <= 0:
            raise ValueError(f"--iterations must be > 0; got {args.iterations}")
        base["optim.iterations"] = args.iterations
        base["optim.milestones"] = list(scaled_milestones(args.iterations))
    if args.shortcut is not None:
        base["model.shortcut"] = args.shortcut
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects KEY=VALUE; got {item!r}")
        base[key] = value
    base["data.data_dir"] = str(Path(base["data.data_dir"]).expanduser().resolve())
    cpus = args.cpus_per_trial if args.cpus_per_trial is not None else preset.cpus_per_trial
    if not base.get("run.threads"):
        base["run.threads"] = max(1, int(cpus))
    base = TrainConfig.from_dict(base).to_dict()  # validates every shared field, names the bad one

    families = _split(args.families, str, "--families") or list(preset.grid)
    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r} in --families; choose from {list(FAMILIES)}")
    depths = _split(args.depths, int, "--depths")
    archs = []
    for family in families:
        for depth in depths or preset.grid.get(family, ()):
            archs.append({"model.residual": family == "residual", "model.depth": depth,
                          **(preset.depth_overrides.get(depth, {}) if family == "residual" else {})})
    # Deepest (longest) trials first: Tune starts them in this order, and the short ones then fill the gaps,
    # instead of one long trial running alone at the end while the other slots idle.
    archs.sort(key=lambda arch: -arch["model.depth"])
    seeds = args.seeds if args.seeds is not None else preset.seeds
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1; got {seeds}")
    recipe = preset.recipe if base == TrainConfig.from_dict({**TrainConfig().to_dict(), **preset.config}).to_dict() else "reduced"
    plan = SweepPlan(
        study=study, preset=preset.name, recipe=recipe, base=base, archs=archs, seeds=list(range(seeds)),
        experiment=args.experiment,
        tracking_uri=absolute_tracking_uri(args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
                                           or f"sqlite:///{home / 'mlflow.db'}"),
        storage_path=args.storage_path if args.storage_path and "://" in args.storage_path
        else str(Path(args.storage_path or home / "ray_results").expanduser().resolve()),
        cpus_per_trial=cpus,
        gpus_per_trial=args.gpus_per_trial if args.gpus_per_trial is not None else preset.gpus_per_trial,
        max_concurrent=args.max_concurrent, max_failures=args.max_failures, resume=args.resume,
        report=not args.no_report,
        report_path=args.report_path or str(home / "reports" / f"{args.experiment}.html"),
    )
    if not plan.experiment.strip():
        raise ValueError("--experiment must not be empty")
    if (store := sqlite_path(plan.tracking_uri)) is not None:
        store.parent.mkdir(parents=True, exist_ok=True)
    plan.check()
    return plan


def connect_ray(num_cpus: int | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (set by ``ray job submit``), else start an embedded local Ray."""
    if ray.is_initialized():
        return
    ray.init(address=os.environ.get("RAY_ADDRESS"), num_cpus=None if os.environ.get("RAY_ADDRESS") else num_cpus,
             include_dashboard=False if not os.environ.get("RAY_ADDRESS") else None,
             logging_level="WARNING", log_to_driver=True)


def sweep_main(study: str, description: str, argv: list[str] | None = None) -> int:
    """The whole command line of a study script. Exit codes: 0 all trials finished, 1 some trial errored,
    2 bad input or an unsuitable cluster (nothing was started), 3 the tracking store missed data (spooled)."""
    args = study_arg_parser(study, description).parse_args(argv)
    try:
        if args.preset is None:
            connect_ray()
        preset, why = choose_preset(args)
        print(f"preset: {preset.name} ({why}): {preset.description}", flush=True)
        plan = build_plan(study, args, preset)
        connect_ray()
        plan.check_cluster()
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        results = run_sweep(plan)
    except TrackingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    return 0 if not results.errors else 1
