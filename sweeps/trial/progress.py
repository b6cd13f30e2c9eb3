"""What a trial reports to Tune at each evaluation: the keys and status values that the driver, its scheduler
(ASHA's time attribute) and its searcher read back. The one place these words are spelled; imports nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ITERATION = "iteration"  # the training iteration of the evaluation
STATUS = "status"  # resnet_core.Result.status: one of the three below
RUNNING = "running"  # an evaluation before the last (a trial Tune stops here was stopped early)
COMPLETED = "completed"  # the last evaluation of the full budget
DIVERGED = "diverged"  # the loss became non-finite; the trial ended there
DIVERGED_KEY = "diverged"  # a boolean beside the status, for Tune's table
MINUTES_LEFT = "eta_min"  # the trial's own estimate of its remaining wall time, from its pace so far
UNSENT = "tracking_unsent"  # tracking calls the trial keeps in its spool, not yet in the store (0: none)
SPOOL = "tracking_spool"  # the spool file they are kept in, on the trial's node
MLFLOW_RUN = "mlflow_run_id"  # the trial's MLflow run (the searcher records it on the Optuna trial)


def reported_status(metrics: Mapping[str, Any] | None) -> str | None:
    """The status of a trial's last report (None: it never reported)."""
    return (metrics or {}).get(STATUS)
