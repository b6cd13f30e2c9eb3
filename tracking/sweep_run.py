"""The sweep's parent run: created or reopened by the driver, with who drives it, and closed truly.

Runs in the driver. It also gives runs left open their true status: trial runs of a process that died
without closing them (FAILED) and of a driver that died (KILLED, outcome ``interrupted``).

One sweep per experiment at a time: a parent run is the sweep's claim on its experiment. A driver claims
(creates or reopens its parent run), then looks for another live claim; if there is one, it withdraws its
own and refuses, before any trial starts. Two drivers racing may then both refuse (safe: nothing runs), never
both run. Liveness: on the driver's host its pid; elsewhere its heartbeat tag, renewed every
HEARTBEAT_EVERY seconds while it runs (a driver silent for HEARTBEAT_TIMEOUT seconds counts as dead).
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Param, RunTag
from mlflow.tracking import MlflowClient

from tracking.operations import close_running_children, param_value
from tracking.store import experiment_id_for, filter_value, with_retries
from tracking.trial_run import TrialTracking, find_trial_run

ROLE_SWEEP = "sweep"
HEARTBEAT_TAG = "driver_heartbeat"  # seconds since the epoch, on the driver's clock
HEARTBEAT_EVERY = 60
HEARTBEAT_TIMEOUT = 300  # 5 missed beats; clocks of two hosts may differ by less than a minute or so


class ConcurrentSweepError(ValueError):
    """Another sweep of the same experiment is running; nothing was started."""


def driver_identity() -> dict[str, str]:
    """Tags that say which process drives a sweep, so a later command can tell whether it is still alive."""
    import psutil  # a dependency of Ray

    me = psutil.Process()
    return {"driver_host": socket.gethostname(), "driver_pid": str(me.pid),
            "driver_started": f"{me.create_time():.2f}", HEARTBEAT_TAG: f"{time.time():.0f}"}


def driver_alive(tags: dict[str, str]) -> bool | None:
    """Whether the driver recorded in a parent run's tags still runs: True, False, or None (another host, and
    a run logged before heartbeats)."""
    import psutil

    if tags.get("driver_host") != socket.gethostname() or "driver_pid" not in tags:
        if HEARTBEAT_TAG not in tags:
            return None
        return time.time() - float(tags[HEARTBEAT_TAG]) < HEARTBEAT_TIMEOUT
    try:
        process = psutil.Process(int(tags["driver_pid"]))
        return abs(process.create_time() - float(tags.get("driver_started", "0"))) < 1.0  # not a reused pid
    except (psutil.NoSuchProcess, ValueError):
        return False


@dataclass(frozen=True)
class EarlierSweep:
    """The newest parent run of the same sweep (same experiment and Tune storage directory)."""

    experiment_id: str
    run_id: str
    status: str
    alive: bool | None  # whether its driver still runs (None: it ran on another host, before heartbeats)
    host: str = ""  # where its driver runs

    @property
    def interrupted(self) -> bool:
        """Its driver died (or was stopped) before the sweep finished."""
        return self.status == "KILLED" or (self.status == "RUNNING" and self.alive is False)

    @property
    def running(self) -> bool:
        return self.status == "RUNNING" and bool(self.alive)


def earlier_sweep(uri: str, experiment: str, sweep_id: str) -> EarlierSweep | None:
    """The newest parent run of ``sweep_id`` in ``experiment``, or None (reads only)."""
    client = MlflowClient(uri)
    experiment_id = with_retries(lambda: experiment_id_for(client, experiment, create=False), "find experiment")
    if experiment_id is None:
        return None
    found = with_retries(lambda: client.search_runs(
        [experiment_id], f"tags.role = {filter_value(ROLE_SWEEP)} and tags.sweep_id = {filter_value(sweep_id)}",
        order_by=["attributes.start_time DESC"], max_results=1), "find the sweep's parent run")
    if not found:
        return None
    run = found[0]
    return EarlierSweep(experiment_id, run.info.run_id, run.info.status, driver_alive(run.data.tags),
                        run.data.tags.get("driver_host", ""))


def heartbeat(uri: str, run_id: str) -> None:
    """Renew the driver's heartbeat on its parent run (one try: the next beat retries)."""
    MlflowClient(uri).set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.0f}")


def running_sweeps(uri: str, experiment: str) -> list[EarlierSweep]:
    """The parent runs of ``experiment`` that are RUNNING with a driver not known to be dead (reads only)."""
    client = MlflowClient(uri)
    experiment_id = with_retries(lambda: experiment_id_for(client, experiment, create=False), "find experiment")
    if experiment_id is None:
        return []
    found = with_retries(lambda: client.search_runs(
        [experiment_id], f"tags.role = {filter_value(ROLE_SWEEP)} and attributes.status = 'RUNNING'",
        max_results=100),
        "find running sweeps")
    sweeps = [EarlierSweep(experiment_id, r.info.run_id, r.info.status, driver_alive(r.data.tags),
                             r.data.tags.get("driver_host", "")) for r in found]
    return [sweep for sweep in sweeps if sweep.alive is not False]


def concurrent_sweep_message(experiment: str, other: EarlierSweep) -> str:
    where = ("its driver on this host is alive" if other.host == socket.gethostname() else
             f"its driver runs on {other.host or 'another host'}")
    return (f"another sweep of experiment {experiment!r} is running (parent run {other.run_id}; {where}): one "
            f"sweep per experiment at a time, so that the report compares the runs of one sweep. Wait for it to "
            f"end, or use another --experiment. If its driver is gone without closing it, mark that run KILLED "
            f"in MLflow (or resume that sweep with --resume)")


def start_parent_run(uri: str, experiment: str, sweep_id: str, run_name: str, tags: dict[str, str],
                     params: dict[str, Any], resume: bool = False) -> tuple[str, str]:
    """Create the sweep's parent run, or with ``resume`` reopen the newest one of the same sweep: the sweep's
    claim on the experiment (see the module's docstring).

    ``sweep_id`` identifies the sweep across driver restarts (the Tune experiment's storage path). Returns
    (experiment_id, run_id). Raises ConcurrentSweepError, having withdrawn its claim, when another sweep of
    the experiment is running.
    """
    client = MlflowClient(uri)
    experiment_id = with_retries(lambda: experiment_id_for(client, experiment, create=True), "create experiment")
    earlier = earlier_sweep(uri, experiment, sweep_id)
    if earlier is not None and earlier.running:  # not to be reopened under its live driver
        raise ConcurrentSweepError(concurrent_sweep_message(experiment, earlier))
    identity = driver_identity()
    reopened = resume and earlier is not None
    if reopened:
        with_retries(lambda: client.log_batch(earlier.run_id, tags=[RunTag(k, v) for k, v in identity.items()]),
                     "tag parent run")
        with_retries(lambda: client.update_run(earlier.run_id, status="RUNNING"), "reopen parent run")
        run_id = earlier.run_id
    else:
        run = with_retries(lambda: client.create_run(experiment_id, run_name=run_name, tags={
            **tags, "role": ROLE_SWEEP, "sweep_id": sweep_id, **identity}), "create parent run")
        run_id = run.info.run_id
    rivals = [other for other in running_sweeps(uri, experiment) if other.run_id != run_id]
    if rivals:  # withdraw the claim: a reopened run goes back to KILLED, a new one goes away
        with_retries((lambda: client.set_terminated(run_id, "KILLED")) if reopened else
                     (lambda: client.delete_run(run_id)), "withdraw the parent run")
        raise ConcurrentSweepError(concurrent_sweep_message(experiment, rivals[0]))
    if not reopened:
        with_retries(lambda: client.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()]),
                     "log sweep params")
    return experiment_id, run_id


def finish_run(uri: str, run_id: str, status: str, attempts: int = 8) -> None:
    with_retries(lambda: MlflowClient(uri).set_terminated(run_id, status), "finish run", attempts=attempts)


def close_orphaned_trial_runs(uri: str, experiment_id: str, parent_run_id: str, attempts: int = 8) -> list[str]:
    """Mark trial runs left RUNNING by a dead driver as KILLED (outcome ``interrupted``); returns their ids."""
    client = MlflowClient(uri)
    return with_retries(lambda: close_running_children(client, experiment_id, parent_run_id),
                        "close orphaned runs", attempts=attempts)


def close_interrupted_sweep(uri: str, earlier: EarlierSweep) -> list[str]:
    """Give the runs of a sweep whose driver died their true status (KILLED, outcome ``interrupted``)."""
    closed = close_orphaned_trial_runs(uri, earlier.experiment_id, earlier.run_id)
    if earlier.status == "RUNNING":
        finish_run(uri, earlier.run_id, "KILLED")
    return closed


def mark_trial_run(tracking: TrialTracking, trial_id: str, outcome: str, status: str,
                   tags: dict[str, Any] | None = None, only_running: bool = True, attempts: int = 3) -> bool:
    """Give a trial's run its true end from the driver: the tag ``outcome`` (and ``tags``) and MLflow ``status``
    (e.g. ``stopped_early`` and FINISHED for a trial a search's ASHA stopped, ``failed`` and FAILED).

    With ``only_running``, only a run still RUNNING is changed. True if the run was changed.
    """
    client = MlflowClient(tracking.tracking_uri)
    run = with_retries(lambda: find_trial_run(client, tracking, trial_id), "find trial run", attempts=attempts)
    if run is None or (only_running and run.info.status != "RUNNING"):
        return False
    batch = [RunTag(k, str(v)) for k, v in {**(tags or {}), "outcome": outcome}.items()]
    with_retries(lambda: client.log_batch(run.info.run_id, tags=batch), f"tag {outcome} run", attempts=attempts)
    with_retries(lambda: client.set_terminated(run.info.run_id, status), f"close {outcome} run", attempts=attempts)
    return True


def wait_until_closed(tracking: TrialTracking, trial_ids: list[str], timeout: float, poll: float = 0.5) -> list[str]:
    """Wait, at most ``timeout`` seconds in all, until the runs of these trials are no longer RUNNING; returns the
    trial ids still RUNNING then.

    Why: a trial Tune stopped closes its own run (KILLED, ``outcome=stopped``) from its process, which may still
    be ending when the stage returns; a driver's mark written before that close would be overwritten by it.
    """
    client = MlflowClient(tracking.tracking_uri)
    deadline, pending = time.monotonic() + timeout, list(trial_ids)
    while pending:
        runs = {t: with_retries(lambda t=t: find_trial_run(client, tracking, t), "find trial run") for t in pending}
        pending = [t for t, run in runs.items() if run is not None and run.info.status == "RUNNING"]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    return pending


def mark_trial_run_failed(tracking: TrialTracking, trial_id: str, attempts: int = 3) -> bool:
    """Close a trial's run as FAILED if it is still RUNNING (its process died without closing it, e.g.
    killed by the OS). True if the run was changed."""
    return mark_trial_run(tracking, trial_id, "failed", "FAILED", attempts=attempts)
