"""A trial's one MLflow run: created on first use, found again by the Tune trial id on retries and restores.

Runs in the trial's process (possibly on another machine). Steps already in the run are not logged twice.
Opening the run needs the store (with retries, else it raises and Tune retries the trial); after that the calls
go through a background sender (``sender.Sender``), so none holds training up for more than ``sender.WAIT``
seconds: a call the store does not take is spooled, and sent, in order, once the store answers again.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracking import operations
from tracking.operations import Entry, param_value
from tracking.sender import Sender
from tracking.spool import Spool, node_spool_root
from tracking.store import bound_http_retries, filter_value, with_retries


ROLE_TRIAL = "trial"
PROGRESS_METRIC = "train/error"  # logged at every evaluation: its last step is how far a run's log got
# "stopped": Tune ended the trial at a report before its last. The trial cannot tell why, so it is KILLED (an
# interruption: the sweep's driver was stopping) until a search's driver re-marks an ASHA stop as FINISHED
# with outcome=stopped_early (sweeps/driver/search/stages.py). Any other outcome: FAILED.
FINISH_STATUS = {"completed": RunStatus.FINISHED, "stopped": RunStatus.KILLED}


@dataclass(frozen=True)
class TrialTracking:
    """What a trial needs to find its MLflow run: plain data, shipped from the driver to the trial's process."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: tuple[tuple[str, str], ...] = ()  # sweep-wide tags (preset, study)
    spool_dir: str = ""  # where unsent tracking calls are kept (see Spool); empty: a temporary directory
    system_metrics_every: float = 0.0  # seconds between system-metrics samples (tracking/system_metrics.py)


def find_trial_run(client: MlflowClient, tracking: TrialTracking, trial_id: str):
    """The run of Tune trial ``trial_id`` in this sweep, or None."""
    found = client.search_runs([tracking.experiment_id],
                               f"tags.mlflow.parentRunId = {filter_value(tracking.parent_run_id)} "
                               f"and tags.trial_id = {filter_value(trial_id)}", max_results=2)
    return found[0] if found else None


# How long a starting trial waits for an unreachable tracking store before it fails (and spends one of
# --max-failures): a trial needs its run before it trains, and an outage of a few minutes should cost nothing.
OPEN_PATIENCE = 600.0


class TrialRun:
    """The one MLflow run of a Tune trial."""

    def __init__(self, tracking: TrialTracking, trial_id: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any], attempts: int = 3, adopts: str | None = None):
        """``adopts``: the Tune trial id of an earlier trial whose run this one continues (a search trial that a
        dead driver created but did not save, re-issued under a new id on --resume); None for most trials."""
        bound_http_retries(tracking.tracking_uri)
        self.client = MlflowClient(tracking.tracking_uri)
        self.tracking = tracking
        self.attempts = attempts
        spool_dir = Path(tracking.spool_dir or node_spool_root())
        self.spool = Spool(spool_dir / f"{trial_id}.jsonl", tracking.tracking_uri)
        self.ended: str | None = None  # the outcome this attempt closed the run with
        self.run_id, self.last_logged_step, self.attempt = with_retries(
            lambda: self._open(trial_id, run_name, tags, params, adopts), "open trial run", patience=OPEN_PATIENCE)
        # Sends with ``self.client`` as it is at each call (a test may swap it for a client of a dead store).
        self.sender = Sender(self.spool, lambda: self.client, attempts, tracking.tracking_uri)

    def _open(self, trial_id: str, run_name: str, tags: dict[str, str], params: dict[str, Any],
              adopts: str | None) -> tuple[str, int, int]:
        t = self.tracking
        # What an earlier attempt of this trial could not send goes first, so the history below is complete.
        if self.spool.flush(self.client, attempts=1):
            raise MlflowException(f"tracking store {t.tracking_uri} is unreachable; spooled calls in "
                                  f"{self.spool.path} are unsent")
        found = find_trial_run(self.client, t, trial_id) or (adopts and find_trial_run(self.client, t, adopts))
        if found:
            run_id = found.info.run_id
            attempt = int(found.data.tags.get("attempts", "1")) + 1
            self.client.log_batch(run_id, tags=[RunTag("outcome", "running"), RunTag("attempts", str(attempt)),
                                                RunTag("trial_id", trial_id)])
            self.client.update_run(run_id, status="RUNNING")
            if not found.data.params:  # created, then its params batch failed: the run must not stay without
                self._log_params(run_id, params)
            history = self.client.get_metric_history(run_id, PROGRESS_METRIC)
            return run_id, max((m.step for m in history), default=-1), attempt
        all_tags = {**dict(t.tags), **tags, "role": ROLE_TRIAL, "trial_id": trial_id,
                    "mlflow.parentRunId": t.parent_run_id, "outcome": "running", "attempts": "1"}
        run = self.client.create_run(t.experiment_id, run_name=run_name, tags=all_tags)
        self._log_params(run.info.run_id, params)
        return run.info.run_id, -1, 1

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        self.client.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])

    def _call(self, what: str, entry: Entry, wait: bool = True) -> None:
        """Hand one tracking call to the sender: sent in order, or spooled behind what is already spooled.

        ``wait``: wait for it, at most ``sender.WAIT`` seconds, if the store has been keeping up.
        """
        self.sender.submit(what, entry, wait)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> bool:
        """Log one evaluation's metrics at ``step`` unless that step is already in the run; True if logged.

        A step that could not reach the store is spooled and counts as logged (it is sent later).
        """
        if step <= self.last_logged_step:
            return False
        self._call("log metrics", operations.metrics_entry(self.run_id, step, metrics, PROGRESS_METRIC))
        self.last_logged_step = step
        return True

    def set_tags(self, tags: dict[str, Any]) -> None:
        self._call("set tags", operations.tags_entry(self.run_id, tags))

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        """Log ``data`` as the JSON artifact ``artifact_file`` (e.g. ``probes/grad_norms.json``)."""
        folder, name = os.path.split(artifact_file)
        with tempfile.TemporaryDirectory() as directory:
            path = Path(directory) / name
            path.write_text(json.dumps(data, indent=2))
            self.log_file(path, folder or None)

    def log_dataset(self, name: str, digest: str, source_type: str, source: str) -> None:
        """Record the data the run trains on as its MLflow dataset input."""
        self._call("log dataset", operations.dataset_entry(self.run_id, name, digest, source_type, source))

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self._call("log artifact", operations.artifact_entry(self.run_id, path, artifact_path))

    def finish(self, outcome: str) -> bool:
        """Close the run with a true status: FINISHED when completed, KILLED when Tune stopped it before its
        last iteration ("stopped", see ``FINISH_STATUS``), FAILED when diverged or crashed.

        Waits at most ``sender.WAIT`` seconds for what is still queued; returns False when not everything reached
        the store: the end is then spooled with everything before it.
        """
        self.ended = outcome
        tags = {"outcome": outcome, **({"diverged": "true"} if outcome == "diverged" else {})}
        status = RunStatus.to_string(FINISH_STATUS.get(outcome, RunStatus.FAILED))
        self.sender.retry_now(self.attempts)  # one last, slightly more patient try to deliver what is spooled
        self._call("set tags", operations.tags_entry(self.run_id, tags, self.attempt), wait=False)
        self._call("finish run", operations.status_entry(self.run_id, status, self.attempt), wait=False)
        return self.sender.close()
