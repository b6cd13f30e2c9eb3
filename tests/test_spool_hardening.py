"""The spool opens nothing through a symbolic link nor another user's file, and one bad line blocks nothing: it
moves to ``<spool>.rejected`` and the rest reaches a real SQLite MLflow store (issue 30, item 3)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps import resend as resend_cli
from tracking import operations
from tracking.spool import Spool, SpoolFileError


def _store(tmp_path: Path) -> tuple[str, MlflowClient, str]:
    """A real SQLite store with one run: its URI, a client, the run's id."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("spool", artifact_location=(tmp_path / "artifacts").as_uri())
    return uri, client, client.create_run(experiment_id, tags={"trial_id": "trial"}).info.run_id


def _metrics(run_id: str, step: int) -> str:
    return json.dumps(operations.metrics_entry(run_id, step, {"train/error": float(step)}, "train/error"))


def _steps(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "train/error"))


def test_a_spool_file_that_is_a_link_is_refused_and_its_target_untouched(tmp_path):
    """A ``.jsonl`` linked to a victim file: the append is refused naming the spool's path, the victim unchanged."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    spool = Spool(tmp_path / "spool" / "trial.jsonl", f"sqlite:///{tmp_path / 'unused.db'}")
    spool.path.parent.mkdir()
    spool.path.symlink_to(victim)
    with pytest.raises(SpoolFileError, match=f"{spool.path}.*symbolic link"):
        spool.append(operations.tags_entry("run", {"a": "b"}))
    with pytest.raises(SpoolFileError, match=str(spool.path)):
        spool.flush(MlflowClient(f"sqlite:///{tmp_path / 'unused.db'}"))
    assert victim.read_text() == "precious\n"


def test_a_lock_file_that_is_a_link_creates_nothing_through_it(tmp_path):
    """A ``.lock`` linked to a file that does not exist yet: nothing is created there, the spool is not written."""
    target = tmp_path / "created-through-the-link"
    spool = Spool(tmp_path / "spool" / "trial.jsonl", f"sqlite:///{tmp_path / 'unused.db'}")
    spool.path.parent.mkdir()
    spool.path.with_suffix(".lock").symlink_to(target)
    with pytest.raises(SpoolFileError, match=str(spool.path.with_suffix(".lock"))):
        spool.append(operations.tags_entry("run", {"a": "b"}))
    assert not target.exists() and not spool.path.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="making a file another user's needs root")
def test_another_users_spool_file_is_refused(tmp_path):
    spool = Spool(tmp_path / "trial.jsonl", f"sqlite:///{tmp_path / 'unused.db'}")
    spool.path.write_text("")
    os.chown(spool.path, 65534, 65534)
    with pytest.raises(SpoolFileError, match=f"{spool.path}.*uid 65534"):
        spool.append(operations.tags_entry("run", {"a": "b"}))
    assert spool.path.read_text() == ""


def test_bad_lines_move_aside_and_the_honest_ones_arrive(tmp_path, caplog):
    """A line cut short, a JSON value that is no call, and a call the store rejects (an unknown run) sit between
    honest lines: the honest ones reach the store, the three bad ones end in ``.rejected``, each logged by line."""
    uri, client, run_id = _store(tmp_path)
    spool = Spool(tmp_path / "tracking_spool" / "trial.jsonl", uri)
    spool.append(json.loads(_metrics(run_id, 1)))
    lines = [_metrics(run_id, 1)[:25], '["not", "a call"]', _metrics(run_id, 2), _metrics("0" * 32, 9),
             _metrics(run_id, 3)]
    with spool.path.open("a") as f:
        f.write("\n".join(lines) + "\n")
    with caplog.at_level(logging.ERROR, logger="tracking.spool"):
        assert spool.flush(client) == 0
    assert _steps(client, run_id) == [1, 2, 3]
    assert spool.rejected.read_text().splitlines() == [lines[0], lines[1], lines[3]]
    assert not spool.path.exists() and spool.path.with_suffix(".lock").is_file()  # the lock file is kept
    logged = [r.getMessage() for r in caplog.records]
    for number in (2, 3, 5):
        assert any(f"line {number} of {spool.path}" in m and str(spool.rejected) in m for m in logged), logged
    assert any("rejected it" in m for m in logged), logged


def test_a_missing_spooled_file_is_not_a_store_outage(tmp_path, caplog):
    """An artifact line whose spooled copy is gone moves aside (naming the file), not kept as 'store unreachable'."""
    uri, client, run_id = _store(tmp_path)
    spool = Spool(tmp_path / "tracking_spool" / "trial.jsonl", uri)
    report = tmp_path / "report.txt"
    report.write_text("r")
    spool.append(operations.artifact_entry(run_id, report, None))
    spool.append(json.loads(_metrics(run_id, 4)))
    for kept in spool.files.iterdir():
        kept.unlink()
    with caplog.at_level(logging.WARNING, logger="tracking.spool"):
        assert spool.flush(client) == 0
    assert _steps(client, run_id) == [4]
    assert not any("unreachable" in r.getMessage() for r in caplog.records)
    assert any("0000-report.txt" in r.getMessage() and "line 1" in r.getMessage() for r in caplog.records)


def test_resend_goes_past_a_poisoned_spool_file(tmp_path, capsys):
    """Two spool files, the first with a poison line: ``python -m sweeps.resend`` still delivers the second."""
    uri, client, run_id = _store(tmp_path)
    spool_dir = tmp_path / "ray_results" / "exp" / "tracking_spool"
    spool_dir.mkdir(parents=True)
    other = client.create_run(client.get_run(run_id).info.experiment_id, tags={"trial_id": "b"}).info.run_id
    (spool_dir / "trial.jsonl").write_text('["poison"]\n' + _metrics(run_id, 1) + "\n")
    (spool_dir / "b.jsonl").write_text(_metrics(other, 2) + "\n")
    assert resend_cli.main([str(spool_dir), "--tracking-uri", uri]) == 0
    assert _steps(client, run_id) == [1] and _steps(client, other) == [2]
    assert (spool_dir / "trial.jsonl.rejected").read_text() == '["poison"]\n'
    assert "1 spooled line(s) can never be sent" in capsys.readouterr().err


def test_a_line_for_another_run_is_rejected_and_the_sweep_still_closes(tmp_path, caplog):
    """A writer forges lines into a trial's spool and into the sweep's: for a run of another trial (its outcome,
    its status) and for another parent. They are set aside, logged naming the run; the honest lines arrive and
    the parent run ends FINISHED; the victim run keeps its status and tags."""
    uri, client, run_id = _store(tmp_path)
    experiment_id = client.get_run(run_id).info.experiment_id
    victim = client.create_run(experiment_id, tags={"trial_id": "victim", "outcome": "completed"}).info.run_id
    client.set_terminated(victim, "FINISHED")
    parent = client.create_run(experiment_id).info.run_id
    spool_dir = tmp_path / "ray_results" / "exp" / "tracking_spool"
    trial, sweep = Spool(spool_dir / "trial.jsonl", uri), Spool(spool_dir / f"sweep-{parent}.jsonl", uri)
    trial.append(json.loads(_metrics(run_id, 1)))
    trial.append(operations.tags_entry(victim, {"outcome": "failed"}))
    trial.append(operations.status_entry(victim, "FAILED"))
    sweep.append(operations.status_entry(victim, "KILLED"))
    sweep.append(operations.close_orphans_entry(parent, "999"))
    sweep.append(operations.status_entry(parent, "FINISHED"))
    with caplog.at_level(logging.ERROR, logger="tracking.spool"):
        assert resend_cli.main([str(spool_dir), "--tracking-uri", uri]) == 0
    assert _steps(client, run_id) == [1]
    assert client.get_run(parent).info.status == "FINISHED"
    victim_run = client.get_run(victim)
    assert victim_run.info.status == "FINISHED" and victim_run.data.tags["outcome"] == "completed"
    assert len(trial.rejected.read_text().splitlines()) == 2 and len(sweep.rejected.read_text().splitlines()) == 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert f"names run '{victim}', whose trial is 'victim', not this spool's 'trial'" in logged
    assert f"names run '{victim}'; this sweep spool's run is '{parent}'" in logged
    assert "names experiment '999', not its parent run's" in logged


def test_a_nodes_old_spool_resent_after_a_retry_finished_the_trial_changes_nothing(tmp_path):
    """Attempt 1 ran on a node whose spool kept its last evaluation and its FAILED end; attempt 2 (elsewhere)
    redid that step and finished the run. Resending the node's spool later must neither set the run back to
    FAILED nor add a second step 6 (its values and times differ from the redone one)."""
    uri, client, run_id = _store(tmp_path)
    spool = Spool(tmp_path / "node" / "trial.jsonl", uri)
    spool.append(operations.metrics_entry(run_id, 6, {"train/error": 30.0}, "train/error"))
    spool.append(operations.tags_entry(run_id, {"outcome": "failed"}, attempt=1))
    spool.append(operations.status_entry(run_id, "FAILED", attempt=1))
    spool.append(operations.metrics_entry(run_id, 7, {"train/error": 20.0}, "train/error"))  # never redone
    operations.send(client, operations.metrics_entry(run_id, 6, {"train/error": 29.0}, "train/error"))
    client.set_tag(run_id, "attempts", "2")
    operations.send(client, operations.tags_entry(run_id, {"outcome": "completed"}, attempt=2))
    client.set_terminated(run_id, "FINISHED")

    assert spool.flush(client) == 0 and not spool.rejected.exists()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    assert [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, "train/error"),
                                              key=lambda m: m.step)] == [(6, 29.0), (7, 20.0)]
