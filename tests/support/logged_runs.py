"""Reading back what a sweep logged to MLflow: the metrics every evaluation logs, trial runs by name, steps."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

# Every evaluation of a trial logs these (tests check none is lost or doubled).
METRICS = {"train/error", "train/loss", "train/images", "test/error", "test/loss", "test/images", "opt/lr",
           "perf/images_per_sec", "probe/grad_norm", "probe/response_std_mean"}


def trial_runs(client: MlflowClient, experiment: str) -> dict[str, list]:
    """Trial runs by run name (a list, so that a duplicate run would show)."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs: dict[str, list] = {}
    for run in client.search_runs([experiment_id], "tags.role = 'trial'", max_results=1000):
        runs.setdefault(run.info.run_name, []).append(run)
    return runs


def steps(client: MlflowClient, run, metric: str = "train/error") -> list[int]:
    return [m.step for m in sorted(client.get_metric_history(run.info.run_id, metric), key=lambda m: m.timestamp)]
