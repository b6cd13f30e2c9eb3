"""Write a realistic sweep experiment to MLflow, exactly as docs/tracking.md describes, without training.

Why: the report (dashboards/) and its benchmark need an experiment with the sweep's tags, metric names and
artifacts, with failed, diverged and probe-less runs in it, in well under a second per run. The curves are
synthetic but shaped like the paper's Fig. 6: deeper plain nets train worse, deeper residual nets better.
Everything is written through ``MlflowClient`` (``log_batch`` for speed), never through SQL.
"""

from __future__ import annotations

import functools
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import urlparse

from mlflow.entities import Metric, Param

from tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG
from mlflow.tracking import MlflowClient

from resnet_core.config import TrainConfig

PAPER_ITERATIONS = 64_000
# The config key of the model layout: "model.layout", or "model.family" before the rename.
_LAYOUT_KEY = "model.layout" if "model.layout" in TrainConfig().to_dict() else "model.family"
# The config key of the dropout before the classifier: "model.head_dropout", or "model.dropout" before the rename.
DROPOUT_KEY = "model.head_dropout" if "model.head_dropout" in TrainConfig().to_dict() else "model.dropout"


@dataclass
class FixtureExperiment:
    """What was written: ids and the names of the special runs, for tests to assert on."""

    tracking_uri: str
    name: str
    experiment_id: str
    parent_run_id: str
    runs: dict[str, str] = field(default_factory=dict)  # child run id -> run name
    failed: list[str] = field(default_factory=list)  # run names
    diverged: list[str] = field(default_factory=list)
    missing_probes: list[str] = field(default_factory=list)

    def run_id(self, name: str) -> str:
        """The id of the (first) child run with this name."""
        return next(run_id for run_id, run_name in self.runs.items() if run_name == name)


@dataclass
class _Trial:
    """One child run to write: its identity, the config overrides and how it ends."""

    family: str
    depth: int
    seed: int
    shortcut: str = "A"
    outcome: str = "completed"  # completed / diverged / failed / running (still training: status RUNNING)
    reached: int | None = None  # running: the last iteration it has logged so far
    probes: bool = True
    overrides: dict = field(default_factory=dict)
    train_error: float | None = None  # the exact final training error (%), instead of the Fig. 6 shape + noise

    @property
    def name(self) -> str:
        shortcut = f" {self.shortcut}" if self.family == "residual" and self.shortcut != "A" else ""
        return f"{self.family}-{self.depth}{shortcut} seed {self.seed}"


def write_fixture_experiment(
    tracking_uri: str,
    name: str,
    *,
    depths: Iterable[int] = (20, 56),
    families: Iterable[str] = ("plain", "residual"),
    seeds: int = 2,
    iterations: int = 2000,
    points: int = 20,
    with_failed: bool = True,
    with_diverged: bool = True,
    missing_probes_for: Iterable[str] = (),
    shortcuts: Iterable[str] | None = None,
    search_trials: int = 0,
    dataset: str = "cifar10",
    preset: str | None = None,
    recipe: str | None = None,
    study: str = "depth_vs_error",
    val_size: int = 0,
    layout: str = "cifar",
    layout_tag: str = "model_family",
    train_errors: dict[tuple[str, int], list[float]] | None = None,
    probe_history: bool = True,
    artifacts: bool = True,
    artifact_root: str | Path | None = None,
    start_time_ms: int | None = None,
    random_seed: int = 0,
    config: dict | None = None,
    ten_crop_images: int | None = None,
    extra_trials: Iterable[dict] = (),
) -> FixtureExperiment:
    """Write one parent run (role=sweep) and its child runs (role=trial) into a new experiment.

    Args:
        depths, families, seeds: the grid of completed trials (family × depth × seed).
        iterations, points: training length and number of evaluations per run (the last one at ``iterations``).
        with_failed: add a crashed run (status FAILED, outcome=failed, partial curves, no probes).
        with_diverged: add a diverged run (status FAILED, outcome=diverged, diverged=true, NaN loss).
        missing_probes_for: run names written without ``probes/*.json`` artifacts.
        shortcuts: residual runs are repeated for each option, e.g. ``("A", "B", "C")``.
        search_trials: extra residual trials of the deepest depth with random lr / weight decay / dropout,
            as a regularisation search writes them.
        recipe: the parent's recipe tag; by default ``paper`` exactly when the run is the paper's recipe.
        layout: the model layout (``cifar`` / ``imagenet``, e.g. depths 18, 34, 50); ImageNet-layout runs log
            responses of every main-path layer, as the trainer did before it logged 3×3 layers only.
        layout_tag: the tag name it is logged under: ``model_family`` (the name sweeps used first) or ``layout``.
        train_errors: exact final training errors (%) per (family, depth), one per seed — a known gap for the
            verdict tests; the number of values sets the seeds of that net.
        probe_history: write probes at every evaluation (True) or only the final one (smaller artifacts).
        artifacts: write the trial runs' artifacts (config, environment, probes); False is faster when only
            metrics matter (every run then lacks probes).
        artifact_root: where artifacts go; by default ``mlartifacts/`` beside a SQLite store.
        config: flat config overrides of every trial (``data.data_dir``, ``model.width``, ...).
        extra_trials: more child runs, each as keywords of one trial: ``family``, ``depth``, ``seed``, ``shortcut``,
            ``outcome`` (completed / diverged / failed / running), ``reached`` (running: the last iteration logged
            so far; the run is left RUNNING, its outcome tag ``running``, as a trial still training is).
        ten_crop_images: log as an ImageNet trial does (resnet_core/imagenet/stream.py): ``test/top5_error`` and
            ``test/images`` (this many) at every evaluation, and at the last one the 10-crop metrics
            ``test/error_10crop`` (1 pp under the centre crop), ``test/top5_error_10crop``, ``test/images_10crop``.
    """
    rng = random.Random(random_seed)
    depths, families = tuple(depths), tuple(families)
    missing = set(missing_probes_for)
    preset = preset or ("paper" if iterations >= PAPER_ITERATIONS else "smoke")
    if recipe is None:
        recipe = "paper" if iterations >= PAPER_ITERATIONS and dataset == "cifar10" and val_size == 0 else "reduced"

    client = MlflowClient(tracking_uri)
    location = _artifact_location(tracking_uri, name, artifact_root)
    # Tagged with its kind as the sweep tags the experiments it creates (tracking/store.py).
    experiment_id = client.create_experiment(name, artifact_location=location,
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    now = start_time_ms or int(time.time() * 1000) - 3_600_000

    if train_errors is not None:
        trials = [_Trial(family, depth, seed, train_error=value)
                  for (family, depth), values in train_errors.items() for seed, value in enumerate(values)]
    else:
        trials = _trial_grid(families, depths, seeds, tuple(shortcuts or ("A",)), rng, search_trials)
    trials += [_Trial(**extra) for extra in extra_trials]
    if with_diverged:
        trials.append(_Trial("plain", depths[-1], seeds, outcome="diverged"))
    if with_failed:
        trials.append(_Trial("residual", depths[0], seeds, outcome="failed", probes=False))
    for trial in trials:
        trial.probes = trial.probes and trial.name not in missing and artifacts

    parent = client.create_run(
        experiment_id,
        start_time=now,
        run_name=f"sweep {study} {preset}",
        tags={"role": "sweep", "study": study, "preset": preset, "dataset": dataset, "recipe": recipe},
    )
    parent_id = parent.info.run_id
    sweep_settings = {
        "study": study, "preset": preset, "dataset": dataset, "depths": list(depths), "families": list(families),
        "seeds": seeds, "iterations": iterations, "shortcuts": list(shortcuts or ("A",)),
        "search_trials": search_trials,
    }
    client.log_batch(parent_id, params=[Param(k, _param_str(v)) for k, v in sweep_settings.items()])
    client.log_dict(parent_id, sweep_settings, "sweep.json")

    fixture = FixtureExperiment(tracking_uri, name, experiment_id, parent_id)
    end = now
    for index, trial in enumerate(trials):
        run_id, run_end = _write_trial(client, experiment_id, parent_id, trial, index, now + 1000 * index, rng,
                                       iterations=iterations, points=points, dataset=dataset, preset=preset,
                                       val_size=val_size, probe_history=probe_history, layout=layout,
                                       layout_tag=layout_tag, artifacts=artifacts, config_overrides=config or {},
                                       ten_crop_images=ten_crop_images)
        end = max(end, run_end)
        fixture.runs[run_id] = trial.name
        if trial.outcome == "failed":
            fixture.failed.append(trial.name)
        if trial.outcome == "diverged":
            fixture.diverged.append(trial.name)
        if not trial.probes:
            fixture.missing_probes.append(trial.name)
    client.set_terminated(parent_id, "FINISHED", end_time=end + 1000)
    return fixture


def sqlite_uri(directory: str | Path, filename: str = "mlflow.db") -> str:
    """``sqlite:///<abs path>`` for a store file inside ``directory``."""
    return f"sqlite:///{(Path(directory) / filename).resolve()}"


# ----------------------------------------------------------------------------------------------- internals

def _trial_grid(families, depths, seeds, shortcuts, rng: random.Random, search_trials: int) -> list[_Trial]:
    trials = []
    for family in families:
        for depth in depths:
            for shortcut in (shortcuts if family == "residual" else ("none",)):
                for seed in range(seeds):
                    trials.append(_Trial(family, depth, seed, shortcut=shortcut if family == "residual" else "A"))
    for _ in range(search_trials):
        overrides = {
            "optim.lr": round(10 ** rng.uniform(-1.7, -0.4), 4),
            "optim.weight_decay": round(10 ** rng.uniform(-5, -3), 7),
            DROPOUT_KEY: round(rng.uniform(0.0, 0.5), 3),
        }
        trials.append(_Trial("residual", depths[-1], 0, overrides=overrides))
    return trials


def _artifact_location(tracking_uri: str, name: str, artifact_root: str | Path | None) -> str | None:
    if artifact_root is None:
        parsed = urlparse(tracking_uri)
        if parsed.scheme != "sqlite":
            return None  # a tracking server chooses its own artifact root
        artifact_root = Path(parsed.path).parent / "mlartifacts"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return (Path(artifact_root).resolve() / safe).as_uri()


def _param_str(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def _final_errors(trial: _Trial, rng: random.Random) -> tuple[float, float]:
    """Final (train, test) error in percent: the shape of the paper's Fig. 6 and Table 6, plus seed noise."""
    d = trial.depth
    if trial.family == "plain":
        train = 5.0 * (d / 20) ** 0.6
        test = train + 5.0
    else:
        train = 4.0 * (20 / d) ** 0.9
        test = 6.3 + 2.6 * (20 / d) ** 1.2
        test += {"A": 0.0, "B": -0.15, "C": -0.25}.get(trial.shortcut, 0.0)
    if trial.overrides:  # regularisation search: a bowl around lr 0.1, weight decay 1e-4, little dropout
        lr, wd, dropout = (trial.overrides[k] for k in ("optim.lr", "optim.weight_decay", DROPOUT_KEY))
        test += 2.0 * (math.log10(wd) + 4) ** 2 + 1.0 * math.log10(lr / 0.1) ** 2 + 2.0 * dropout
        train += 1.5 * (math.log10(wd) + 4) ** 2 + 3.0 * dropout
    noise = rng.gauss(0, 0.2)
    if trial.train_error is not None:
        return trial.train_error, trial.train_error + 5.0
    return max(0.05, train + noise * 0.5), test + noise


def _train_error_at(u: float, final: float) -> float:
    """Training error at fraction ``u`` of training: fast fall, then two steps at the lr drops (50 %, 75 %)."""
    p3, p2 = final, final * 1.6 + 1.0
    p1 = final * 2.5 + 8.0
    if u < 0.5:
        return p1 + (90.0 - p1) * math.exp(-u / 0.06)
    if u < 0.75:
        return p2 + (p1 - p2) * math.exp(-(u - 0.5) / 0.01)
    return p3 + (p2 - p3) * math.exp(-(u - 0.75) / 0.01)


_IMAGENET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def _layer_names(depth: int, layout: str = "cifar") -> list[str]:
    """Response layer names: CIFAR 3×3 stem + 2 per block; ImageNet every main-path layer (7×7 stem, 1×1s)."""
    if layout == "imagenet":
        convs = (1, 2) if depth in (18, 34) else (1, 2, 3)
        return ["conv1"] + [f"layer{s + 1}.{b}.conv{c}" for s, blocks in enumerate(_IMAGENET_BLOCKS[depth])
                            for b in range(blocks) for c in convs]
    n = (depth - 2) // 6
    return ["conv1"] + [f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(n) for c in (1, 2)]


def _layer_stds(trial: _Trial, layers: int, rng: random.Random) -> list[float]:
    """Final response std per 3×3 layer: plain nets larger, residual nets smaller and smaller with depth (Fig. 7)."""
    if trial.family == "plain":
        return [round(1.0 + 0.8 * (i / layers) + 0.5 * rng.random(), 4) for i in range(layers)]
    scale = (20 / trial.depth) ** 0.5
    return [1.0 if i == 0 else round(scale * (0.5 + 0.6 * rng.random()), 4) for i in range(layers)]


def _write_trial(client: MlflowClient, experiment_id: str, parent_id: str, trial: _Trial, index: int,
                 start_ms: int, rng: random.Random, *, iterations: int, points: int, dataset: str, preset: str,
                 val_size: int, probe_history: bool, layout: str = "cifar",
                 layout_tag: str = "model_family", artifacts: bool = True, config_overrides: dict | None = None,
                 ten_crop_images: int | None = None) -> tuple[str, int]:
    """Write one child run; returns its run id and end time in ms."""
    eval_every = max(1, iterations // points)
    steps = sorted({min(iterations, eval_every * k) for k in range(1, points + 1)} | {iterations})
    if trial.outcome == "failed":
        steps = steps[: max(2, len(steps) // 3)]
    if trial.outcome == "running":
        steps = [s for s in steps if s <= (trial.reached or steps[0])]
    diverge_at = len(steps) // 2 if trial.outcome == "diverged" else None

    overrides = {
        "model.depth": trial.depth, "model.residual": trial.family == "residual", "model.shortcut": trial.shortcut,
        "data.dataset": dataset, "data.val_size": val_size, "optim.iterations": iterations,
        "optim.milestones": [iterations // 2, iterations * 3 // 4], "run.seed": trial.seed,
        "run.eval_every": eval_every, _LAYOUT_KEY: layout,
        **(config_overrides or {}), **trial.overrides,
    }
    config = TrainConfig().replace(**overrides).to_dict()
    seconds_per_iter = 0.004 * trial.depth / 20
    duration_ms = int(steps[-1] * seconds_per_iter * 1000) + 5000

    tags = {
        "role": "trial", "family": trial.family, "depth": str(trial.depth),
        "shortcut": trial.shortcut if trial.family == "residual" else "none", "seed": str(trial.seed),
        "preset": preset, "dataset": dataset, layout_tag: layout, "trial_id": f"trainable_{index:05d}",
        "outcome": trial.outcome, "mlflow.parentRunId": parent_id,
        "parameters": str(_parameter_count(layout, trial.depth, trial.family == "residual", trial.shortcut)),
    }
    if trial.outcome == "diverged":
        tags["diverged"] = "true"
    run = client.create_run(experiment_id, start_time=start_ms, tags=tags, run_name=trial.name)
    run_id = run.info.run_id

    final_train, final_test = _final_errors(trial, rng)
    layers = _layer_names(trial.depth, layout)
    final_stds = _layer_stds(trial, len(layers), rng)
    metrics: list[Metric] = []
    probe_iters, probe_stds, grad_norms = [], [], []
    for k, step in enumerate(steps):
        u = step / iterations
        ts = start_ms + int(duration_ms * step / steps[-1])
        jitter = 0.0 if trial.train_error is not None else 0.3 if u < 0.5 else 0.05  # exact errors stay exact
        train = _train_error_at(u, final_train) + rng.gauss(0, jitter)
        test = _train_error_at(u, final_test) + rng.gauss(0, 1.5 if u < 0.5 else 0.15)
        if diverge_at is not None and k >= diverge_at:
            train = test = 90.0
        values = {
            "train/error": train, "train/loss": _loss(train), "test/error": test, "test/loss": _loss(test),
            "opt/lr": 0.1 * 0.1 ** sum(step >= m for m in (iterations // 2, iterations * 3 // 4)),
            "perf/images_per_sec": 3000.0 * 20 / trial.depth * (1 + rng.gauss(0, 0.03)),
            "probe/grad_norm": 2.0 * math.exp(-2 * u) + 0.2 + abs(rng.gauss(0, 0.05)),
        }
        if val_size:
            val = test + rng.gauss(0, 0.3)
            values.update({"val/error": val, "val/loss": _loss(val)})
        if ten_crop_images:
            values.update({"test/top5_error": test / 3, "test/images": float(ten_crop_images)})
            if k == len(steps) - 1 and diverge_at is None:
                values.update({"test/error_10crop": test - 1.0, "test/top5_error_10crop": (test - 1.0) / 3,
                               "test/images_10crop": float(ten_crop_images)})
        if diverge_at is not None and k >= diverge_at:
            values.update({"train/loss": math.nan, "test/loss": math.nan, "probe/grad_norm": math.inf})
        ramp = 0.6 + 0.4 * u  # responses grow a little during training
        stds = [round(s * ramp, 4) for s in final_stds]
        values["probe/response_std_mean"] = sum(stds) / len(stds)
        metrics += [Metric(key, float(v), ts, step) for key, v in values.items()]
        if probe_history or k == len(steps) - 1:
            probe_iters.append(step)
            probe_stds.append(stds)
            grad_norms.append([round(0.05 + 0.1 * rng.random(), 4) for _ in layers])

    params = [Param(k, _param_str(v)) for k, v in config.items()]
    client.log_batch(run_id, metrics=metrics, params=params)
    if artifacts:
        client.log_dict(run_id, config, "config.json")
        client.log_dict(run_id, {"git_commit": "0" * 40, "git_dirty": False, "device": "fixture",
                                 "packages": {"torch": "fixture"}, "trial_id": tags["trial_id"]}, "environment.json")
    if trial.probes:
        client.log_dict(run_id, {"layers": layers, "iterations": probe_iters, "std": probe_stds},
                        "probes/layer_response_std.json")
        client.log_dict(run_id, {"layers": layers, "iterations": probe_iters, "std": grad_norms},
                        "probes/grad_norms.json")
    end_ms = start_ms + duration_ms
    if trial.outcome != "running":  # a run still training stays RUNNING
        client.set_terminated(run_id, "FINISHED" if trial.outcome == "completed" else "FAILED", end_time=end_ms)
    return run_id, end_ms


@functools.lru_cache(maxsize=None)
def _parameter_count(layout: str, depth: int, residual: bool, shortcut: str) -> int:
    """The net's real parameter count, as the trainable logs it (tag ``parameters``)."""
    from resnet_core.models import build_model, count_parameters

    return count_parameters(build_model(layout, depth, residual=residual, shortcut=shortcut))


def _loss(error_percent: float) -> float:
    return -math.log(max(1e-3, 1.0 - 0.95 * error_percent / 100.0)) * 1.5 + 0.01



# ------------------------------------------------------------------------------------------ a search study

SEARCH_SPACE = {"optim.weight_decay": ["loguniform", 1e-5, 1e-2], "optim.label_smoothing": ["uniform", 0.0, 0.2],
                DROPOUT_KEY: ["uniform", 0.0, 0.5], "data.augment": ["choice", True, False]}


@dataclass
class SearchFixture:
    """What ``write_search_experiment`` wrote, for tests to assert on."""

    tracking_uri: str
    name: str
    experiment_id: str
    parent_run_id: str
    runs: dict[str, str] = field(default_factory=dict)  # run id -> run name
    confirm_test: dict[tuple[str, str, int], float] = field(default_factory=dict)  # (family, candidate, seed) -> %
    ranked: dict[str, list[int]] = field(default_factory=dict)  # family -> Optuna trial numbers by validation error


def write_search_experiment(
    tracking_uri: str,
    name: str,
    *,
    families: Iterable[str] = ("plain", "residual"),
    depth: int = 20,
    full_budget: int = 12,
    stopped: int = 4,
    stopped_status: str = "KILLED",
    top_k: int = 2,
    confirm_seeds: Iterable[int] = (1, 2, 3),
    confirm_errors: dict[tuple[str, str], list[float]] | None = None,
    missing_confirm: Iterable[tuple[str, str, int]] = (),
    test_images: int | None = None,
    dataset: str = "digits",
    iterations: int = 400,
    rung: int = 350,
    lr_milestones: list[int] | None = None,
    random_seed: int = 0,
) -> SearchFixture:
    """Write a regularisation search as sweeps/regularization.py logs it (docs/tracking.md, "A search study").

    Per family: ``full_budget`` search trials that reach ``iterations`` and ``stopped`` ones ASHA stopped at
    ``rung`` (tag ``outcome=stopped_early``, status ``stopped_status``: KILLED as sweeps logged them first,
    FINISHED as they do now); validation error falls with dropout, so one knob matters. Then the confirm
    stage: the ``top_k`` full-budget trials by validation error and the default recipe, each on
    ``confirm_seeds`` — written in a shuffled order, so that only pairing by the ``seed`` tag lines them up.
    ``confirm_errors`` fixes the test error (%) per (family, candidate), one per seed; ``missing_confirm`` lists
    (family, candidate, seed) runs that crashed (status FAILED, no final metrics); ``test_images`` logs the
    metric ``test/images``.
    """
    rng = random.Random(random_seed)
    families, seeds = tuple(families), list(confirm_seeds)
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(name, artifact_location=_artifact_location(tracking_uri, name, None),
                                             tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    now = int(time.time() * 1000) - 3_600_000
    parent = client.create_run(experiment_id, start_time=now, run_name="sweep regularization smoke",
                               tags={"role": "sweep", "study": "regularization", "preset": "smoke",
                                     "dataset": dataset, "recipe": "reduced", "report_sections": "search,runs"})
    parent_id = parent.info.run_id
    settings = {"space": SEARCH_SPACE, "num_samples": full_budget + stopped, "search_seed": 0, "grace_period": rung,
                "reduction_factor": 2, "rungs": [rung], "top_k": top_k, "confirm_seeds": len(seeds),
                "metric": "val/error", "optuna_storage": "sqlite:///optuna.db"}
    if lr_milestones is not None:  # as sweeps log them now; searches logged before the rung rule have none
        settings.update(lr_milestones=lr_milestones, rung_milestones={str(rung): [m for m in lr_milestones if m < rung]})
    client.log_batch(parent_id, params=[Param(f"search.{k}", json.dumps(v) if isinstance(v, (list, dict)) else str(v))
                                        for k, v in settings.items()])
    fixture = SearchFixture(tracking_uri, name, experiment_id, parent_id)
    missing = set(missing_confirm)
    writes = []  # (run name, tags, config overrides, final metrics, last step, status)
    for family in families:
        net = f"{family}-{depth}"
        stopped_at = set(rng.sample(range(full_budget + stopped), stopped))
        scored = []
        for number in range(full_budget + stopped):
            knobs = {"optim.weight_decay": round(10 ** rng.uniform(-5, -2), 7),
                     "optim.label_smoothing": round(rng.uniform(0.0, 0.2), 4),
                     DROPOUT_KEY: round(rng.uniform(0.0, 0.5), 4), "data.augment": rng.random() < 0.5}
            val = 12.0 - 16.0 * knobs[DROPOUT_KEY] + rng.gauss(0, 0.5) + (1.0 if family == "plain" else 0.0)
            early = number in stopped_at
            outcome = "stopped_early" if early else "completed"
            tags = {"stage": "search", "optuna_study": f"{name}/{net}/{parent_id[:8]}", "optuna_trial": str(number),
                    "outcome": outcome, "seed": "0", **({"stopped_at_iteration": str(rung)} if early else {})}
            writes.append((f"{net} trial {number}", family, tags, {**knobs, "run.seed": 0},
                           {"val/error": val + (3.0 if early else 0.0), "test/error": val + 0.3},
                           rung if early else iterations, stopped_status if early else "FINISHED"))
            if not early:
                scored.append((val, number, knobs))
        scored.sort(key=lambda s: (s[0], s[1]))
        fixture.ranked[family] = [number for _, number, _ in scored]
        candidates = [(f"top{i + 1}", {"optuna_trial": str(number)}, knobs)
                      for i, (_, number, knobs) in enumerate(scored[:top_k])]
        candidates.append(("default", {}, {key: _default_value(key) for key in SEARCH_SPACE}))
        for rank, (candidate, extra, knobs) in enumerate(candidates):
            errors = (confirm_errors or {}).get((family, candidate))
            for index, seed in enumerate(seeds):
                test = errors[index] if errors else 4.0 + rank + rng.gauss(0, 0.3)
                crashed = (family, candidate, seed) in missing
                if not crashed:
                    fixture.confirm_test[(family, candidate, seed)] = test
                tags = {"stage": "confirm", "candidate": candidate, "seed": str(seed),
                        "outcome": "failed" if crashed else "completed", **extra}
                metrics = {} if crashed else {"val/error": test - 0.2, "test/error": test,
                                              **({"test/images": test_images} if test_images else {})}
                writes.append((f"{net} {candidate} seed {seed}", family, tags, {**knobs, "run.seed": seed}, metrics,
                               iterations // 3 if crashed else iterations, "FAILED" if crashed else "FINISHED"))
    confirm = [w for w in writes if w[2]["stage"] == "confirm"]
    rng.shuffle(confirm)  # runs finish in any order: the report must pair by the seed tag
    for index, (run_name, family, tags, overrides, final, last, status) in enumerate(
            [w for w in writes if w[2]["stage"] == "search"] + confirm):
        run_id = _write_search_run(client, experiment_id, parent_id, run_name, family, depth, tags, overrides, final,
                                   last, status, iterations, dataset, now + 1000 * index)
        fixture.runs[run_id] = run_name
    client.set_terminated(parent_id, "FINISHED", end_time=now + 1000 * len(writes) + 1000)
    return fixture


def _default_value(key: str):
    """The default recipe's value of a flat config key (``optim.weight_decay`` → 1e-4)."""
    return TrainConfig().to_dict()[key]


def _write_search_run(client: MlflowClient, experiment_id: str, parent_id: str, run_name: str, family: str,
                      depth: int, tags: dict, overrides: dict, final: dict, last: int, status: str, iterations: int,
                      dataset: str, start_ms: int) -> str:
    """One search or confirm run: tags, the full config as params, four evaluations ending at ``final``."""
    config = TrainConfig().replace(**{"model.depth": depth, "model.residual": family == "residual",
                                      "data.dataset": dataset, "data.val_size": 300, "optim.iterations": iterations,
                                      **overrides}).to_dict()
    run_tags = {"role": "trial", "family": family, "depth": str(depth), "shortcut": "A" if family == "residual" else
                "none", "preset": "smoke", "dataset": dataset, "layout": "cifar", "mlflow.parentRunId": parent_id,
                "parameters": str(_parameter_count("cifar", depth, family == "residual", "A")), **tags}
    run = client.create_run(experiment_id, start_time=start_ms, tags=run_tags, run_name=run_name)
    steps = [s for s in (iterations // 4, iterations // 2, 3 * iterations // 4, iterations) if s <= last]
    metrics = [Metric(key, float(value + 20.0 * (1 - step / last)), start_ms + step, step)
               for key, value in final.items() if key != "test/images" for step in steps]
    metrics += [Metric("train/error", 1.0 + 30.0 * (1 - step / last), start_ms + step, step) for step in steps]
    if "test/images" in final:
        metrics.append(Metric("test/images", float(final["test/images"]), start_ms + last, last))
    client.log_batch(run.info.run_id, metrics=metrics, params=[Param(k, _param_str(v)) for k, v in config.items()])
    client.set_terminated(run.info.run_id, status, end_time=start_ms + 60_000)
    return run.info.run_id
