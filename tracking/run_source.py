"""Where a sweep's runs come from, in MLflow's own system tags: the Source, Version and User columns of the
MLflow UI, and the parent run's description. The fluent ``mlflow.start_run`` sets these from its context; the
sweeps create runs with ``MlflowClient.create_run``, which sets none, so they are set here. Driver only.
"""

from __future__ import annotations

import getpass
import os
import shlex
from pathlib import Path

from mlflow.entities import SourceType
from mlflow.utils.mlflow_tags import (MLFLOW_GIT_COMMIT, MLFLOW_RUN_NOTE, MLFLOW_SOURCE_NAME, MLFLOW_SOURCE_TYPE,
                                      MLFLOW_USER)


def source_tags(argv: list[str], commit: str | None) -> dict[str, str]:
    """The system tags of every run of a sweep started by ``argv`` at ``commit``: the study script (relative to
    the repository), JOB under ``ray job submit`` (else LOCAL), the commit, and the user (the tracking server's
    user name where one is set, else the login)."""
    script = Path(argv[0]) if argv else Path("unknown")
    root = Path(__file__).resolve().parents[1]
    try:
        name = str(script.resolve().relative_to(root))
    except ValueError:
        name = script.name
    kind = SourceType.JOB if os.environ.get("RAY_JOB_SUBMISSION_ID") else SourceType.LOCAL
    tags = {MLFLOW_SOURCE_NAME: name, MLFLOW_SOURCE_TYPE: SourceType.to_string(kind),
            MLFLOW_USER: os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()}
    if commit:
        tags[MLFLOW_GIT_COMMIT] = commit
    return tags


def sweep_description(study: str, preset: str, recipe: str, argv: list[str]) -> dict[str, str]:
    """The parent run's description (the MLflow UI's "Description"): the study, its preset and the command that
    started it; ``argv`` must already be scrubbed of secrets."""
    command = "python " + shlex.join(argv)
    return {MLFLOW_RUN_NOTE: f"The {study} study, preset {preset} ({recipe} recipe), started by `{command}`."}
