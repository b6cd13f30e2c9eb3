"""A trial's system metrics (CPU and memory use, disk, network; GPU utilisation and memory where NVIDIA's NVML
is installed: the ``gpu`` extra) in its MLflow run, through MLflow's own system-metrics monitor: the run's
"System metrics" charts in the MLflow UI. Runs in the trial's process, on a thread of MLflow's; a tracking
server that hangs stalls that thread, never training, and stopping it waits at most STOP_WAIT_S.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

DEFAULT_EVERY_S = 10.0  # MLflow's default sampling interval: one sample and one write per trial every 10 s
STOP_WAIT_S = 5.0  # the most a trial's end waits for the monitor's last write


@contextlib.contextmanager
def system_metrics(tracking_uri: str, run_id: str, every: float, node_id: str | None = None) -> Iterator[None]:
    """Sample every ``every`` seconds into run ``run_id`` while the body runs (``every`` 0: not at all), under
    ``system/<node_id>/`` when given (the other workers of a multi-worker trial)."""
    if every <= 0:
        yield
        return
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # its start/stop lines, per trial
    monitor = SystemMetricsMonitor(run_id, sampling_interval=every, tracking_uri=tracking_uri, node_id=node_id)
    monitor.start()
    try:
        yield
    finally:
        stopping = threading.Thread(target=monitor.finish, daemon=True, name="stop-system-metrics")
        stopping.start()
        stopping.join(STOP_WAIT_S)
