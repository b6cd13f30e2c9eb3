"""Addresses of experiments and runs in the MLflow UI, for the report's links and the sweep's closing hint."""

from __future__ import annotations


def experiment_url(mlflow_ui_url: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's training runs.

    MLflow 3.17's UI opens every experiment on its GenAI "Overview" (traces) unless the address names the
    model-training view; the experiment's tag ``mlflow.experimentKind`` alone does not change that.
    """
    return f"{mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def run_url(mlflow_ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run, in the model-training view (as ``experiment_url``; without it MLflow 3.17
    shows a run under GenAI's "Evaluations")."""
    return f"{mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"
