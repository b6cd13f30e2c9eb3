"""A search study's command line and settings: its flags, resolved into ``SearchSettings`` and checked.

Runs in the driver, before anything is created: bad input (an unknown knob, an empty or negative range, a
budget of no trials, an lr schedule ASHA's rungs cannot follow, a storage that is not a database URL) raises
ValueError naming the flag, the value and what is valid, and the command exits 2 with no MLflow run, Tune
directory or Optuna study made.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path
from typing import Any

from sweeps.driver.plan import SweepPlan, default_home
from sweeps.driver.search.settings import SearchPlan, SearchSettings, last_lr_drop
from sweeps.study import Knob, SearchBudget, SearchPreset, SearchStudy
from tracking.search_params import search_params as search_params_schema
from tracking.store import absolute_tracking_uri, refuse_password, sqlite_path, unwritable_directory

OPTUNA_DB = "optuna.db"  # beside the MLflow store's SQLite file by default
SEARCH_SCHEDULES = ("steps",)  # the lr schedules (optim.schedule) ASHA's rungs can be placed after the drops of


def add_search_arguments(parser: argparse.ArgumentParser, study: SearchStudy) -> None:
    """The search's flags: which knobs, their ranges, the budget (the same for every family) and the storage."""
    knobs = study.knobs()
    # A range may start below zero (--weight-decay -1e-5,1e-2): argparse reads only plain negative numbers as
    # values, anything else starting with "-" as an unknown flag; widen that so the range check names the value.
    parser._negative_number_matcher = re.compile(r"^-\.?\d[\d.eE+,-]*$")
    space = parser.add_argument_group("what is searched (per family, on validation error)")
    space.add_argument("--knobs", help=f"comma-separated knobs to search, from {','.join(knobs)} (default: "
                                       f"{','.join(study.searched)}); the others keep the recipe's value")
    for knob in knobs.values():
        form = "V1,V2,..." if knob.kind == "choice" else "LOW,HIGH"
        space.add_argument(knob.flag, dest=f"knob.{knob.name}", metavar=form,
                           help=f"{knob.name}: {knob.help}; searched as {form} (default: {knob.describe()})"
                           .replace("%", "%%"))  # argparse %-formats help
    budget = parser.add_argument_group(
        "search budget and storage (each family gets the same budget; default: the preset's)",
        "Every search trial trains the full lr schedule that the confirm stage retrains, and ASHA compares "
        "trials only after its last lr drop, at the learning rate they finish with: it can stop at most the "
        "part of training after that drop (the last 25 % with the paper's milestones at 50 % and 75 %).")
    budget.add_argument("--num-samples", type=int, help="trials per family, early-stopped ones included")
    budget.add_argument("--search-seed", type=int, help="seed of the TPE sampler (the same for every family)")
    budget.add_argument("--grace-period", type=int,
                        help="iterations a trial trains before ASHA may stop it, ASHA's first rung: must lie "
                             "after the last lr drop (optim.milestones) and within the training iterations")
    budget.add_argument("--reduction-factor", type=float, help="ASHA keeps about 1/F of the trials at each rung "
                                                               "(rungs at grace period × F^k iterations)")
    budget.add_argument("--top-k", type=int, help="best configurations per family (by validation error of "
                                                  "full-budget trials) retrained in the confirm stage")
    budget.add_argument("--confirm-seeds", type=int, help="seeds 1..N of each confirm run, for the best "
                                                          "configurations and the default recipe alike")
    budget.add_argument(
        "--optuna-storage", help="database URL of the Optuna studies (default: sqlite:///<dir of the MLflow "
                                 f"SQLite store, else launch dir>/{OPTUNA_DB}); e.g. postgresql://HOST/DB on a "
                                 "cluster, the password in PGPASSWORD or ~/.pgpass rather than the URL")


def search_settings(study: SearchStudy, args: argparse.Namespace, preset: SearchPreset, base: dict[str, Any],
                    tracking_uri: str, home: Path) -> SearchSettings:
    """The search the flags ask for on top of the preset; raises ValueError on bad input (changes nothing)."""
    budget = _budget(args, preset.budget)
    if base["data.val_size"] <= 0:
        raise ValueError("a search is scored on validation error, so it needs a validation split: "
                         f"data.val_size must be > 0 (e.g. --set data.val_size=5000); got {base['data.val_size']}")
    _check_schedule(base["optim.schedule"])
    _check_grace_period(budget.grace_period, base["optim.milestones"], base["optim.iterations"])
    knobs = [knob.checked(base) for knob in _chosen_knobs(study, args)]
    return SearchSettings(
        space={knob.key: [knob.kind, *knob.values] for knob in knobs}, num_samples=budget.num_samples,
        search_seed=budget.search_seed, grace_period=budget.grace_period, reduction_factor=budget.reduction_factor,
        top_k=budget.top_k, confirm_seeds=budget.confirm_seeds,
        optuna_storage=optuna_storage_url(args.optuna_storage, tracking_uri, home),
        lr_milestones=list(base["optim.milestones"]))


def _check_schedule(schedule: str) -> None:
    """ASHA's rungs are placed after the step schedule's last drop (``_check_grace_period``); the plateau schedule
    drops the lr where each trial's validation error stalls instead, so its rungs would compare trials at learning
    rates they do not finish with, each at its own. Raises ValueError naming the value and the valid ones."""
    if schedule not in SEARCH_SCHEDULES:
        raise ValueError(f"optim.schedule={schedule!r} cannot be searched with ASHA: its rungs are placed after the "
                         f"step schedule's last lr drop (optim.milestones), which the {schedule} schedule ignores (it "
                         f"drops the lr where a trial's validation error stalls, at iterations that differ from trial "
                         f"to trial); use optim.schedule from {list(SEARCH_SCHEDULES)} (--set optim.schedule=steps), "
                         f"or a grid study for {schedule}-scheduled nets")


def _check_grace_period(grace_period: int, milestones: list[int], iterations: int) -> None:
    """Every ASHA rung (grace period × F^k) must lie after the lr schedule's last drop and within training
    (why: sweeps/driver/search/asha.py); raises ValueError naming the value and the valid range."""
    drop = last_lr_drop(milestones, iterations)
    if not drop < grace_period <= iterations:
        after = (f"after the last lr drop at iteration {drop} (optim.milestones {list(milestones)}), so that ASHA "
                 f"compares trials at the learning rate they finish with, and " if drop else "")
        raise ValueError(f"--grace-period {grace_period}: ASHA's first rung must lie {after}within the "
                         f"{iterations} training iterations; give a grace period in [{drop + 1}, {iterations}]")


def search_params(search: SearchSettings, iterations: int) -> dict[str, Any]:
    """The search's settings as the parent run's params (``search.*``, the storage's password masked), with
    the ASHA rungs of ``iterations``-long trials and the lr drops before each: what the report reads."""
    return search_params_schema({**dataclasses.asdict(search), "optuna_storage": masked(search.optuna_storage),
                                 "rungs": search.rungs(iterations),
                                 "rung_milestones": search.rung_milestones(iterations)})


def _budget(args: argparse.Namespace, preset: SearchBudget) -> SearchBudget:
    """The preset's budget with the flags given; each must be a positive count (a reduction factor > 1)."""
    given = {name: getattr(args, name) for name in ("num_samples", "search_seed", "grace_period", "reduction_factor",
                                                    "top_k", "confirm_seeds") if getattr(args, name) is not None}
    budget = dataclasses.replace(preset, **given)
    for name in ("num_samples", "grace_period", "top_k", "confirm_seeds"):
        if getattr(budget, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1; got {getattr(budget, name)}")
    if not budget.reduction_factor > 1:
        raise ValueError(f"--reduction-factor must be > 1 (ASHA keeps 1/F of the trials per rung); got "
                         f"{budget.reduction_factor}")
    return budget


def _chosen_knobs(study: SearchStudy, args: argparse.Namespace) -> list[Knob]:
    """The knobs to search (``--knobs``, else the study's), with the ranges given as flags."""
    offered = study.knobs()
    names = [n.strip() for n in args.knobs.split(",") if n.strip()] if args.knobs is not None else study.searched
    if not names:
        raise ValueError(f"--knobs is empty; choose from {list(offered)}")
    for name in names:
        if name not in offered:
            raise ValueError(f"unknown knob {name!r} in --knobs; choose from {list(offered)}")
    knobs = []
    for name in dict.fromkeys(names):
        knob, text = offered[name], getattr(args, f"knob.{name}")
        values = tuple(v.strip() for v in text.split(",")) if text is not None else knob.values
        knobs.append(Knob(knob.key, knob.kind, values))
    unused = [offered[n].flag for n in offered if n not in names and getattr(args, f"knob.{n}") is not None]
    if unused:
        raise ValueError(f"{unused[0]} gives the range of a knob that is not searched; add it to --knobs")
    return knobs


def optuna_storage_url(given: str | None, tracking_uri: str, home: Path) -> str:
    """The Optuna storage: the URL given, else a SQLite file beside the MLflow store's (or in ``home``)."""
    if given is None:
        store = sqlite_path(tracking_uri)
        return f"sqlite:///{(store.parent if store else home) / OPTUNA_DB}"
    if "://" not in given:
        raise ValueError(f"--optuna-storage must be a database URL, e.g. sqlite:///PATH/{OPTUNA_DB} or "
                         f"postgresql://HOST/DB; got {given!r}")
    refuse_password(given, "--optuna-storage", "give the database URL without it and put the password in "
                    "PGPASSWORD or ~/.pgpass (mode 600), where the PostgreSQL driver reads it")
    return absolute_tracking_uri(given)  # a relative sqlite path made absolute; any other URL as given


def check_optuna_storage(url: str) -> None:
    """Raise ValueError when the Optuna storage cannot be used: an unknown kind of database, an uncreatable
    SQLite file, an unreachable server. Reads only: no table or study is created."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = masked(url)
    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect()
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ValueError(f"--optuna-storage {shown} is not a database URL SQLAlchemy can open ({exc})") from None
    if (path := sqlite_path(url)) is not None:
        if (directory := unwritable_directory(path)) is not None:
            raise ValueError(f"cannot create the Optuna storage {shown}: {directory} is not a writable directory")
        return
    try:
        with sqlalchemy.create_engine(url).connect():
            pass
    except SQLAlchemyError as exc:
        raise ValueError(f"cannot reach the Optuna storage {shown}: {str(exc).splitlines()[0]}") from None


def masked(url: str) -> str:
    """``url`` with any password replaced by ***, for logs, MLflow params and messages."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # not parseable: shown as given, it holds no recognisable password
        return url


def search_plan(plan: SweepPlan, study: SearchStudy, args: argparse.Namespace, preset: SearchPreset) -> SearchPlan:
    """``plan`` with the search the flags ask for and its ``search.*`` params; raises ValueError on bad input
    (changes nothing)."""
    if plan.workers_per_trial > 1:
        raise ValueError(f"--workers-per-trial {plan.workers_per_trial}: a search trains each trial in one process "
                         f"(ASHA stops trials at their reports); use --workers-per-trial 1, or a grid study for "
                         f"multi-worker trials")
    search = search_settings(study, args, preset, plan.base, plan.tracking_uri, default_home())
    shared = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    return SearchPlan(**{**shared, "extra_params": search_params(search, plan.base["optim.iterations"])},
                      search=search)


def check_search_plan(plan: SearchPlan) -> None:
    """Reject a search the storage cannot hold (see ``check_optuna_storage``); reads only."""
    check_optuna_storage(plan.search.optuna_storage)
