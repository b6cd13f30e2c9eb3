"""The report never publishes a tracking secret: a URI with credentials in its userinfo (a password, or a token
as the user name) is refused before any work, from ``--tracking-uri`` or ``$MLFLOW_TRACKING_URI``, as the
sweep refuses it; and the page (and its copy logged to the sweep run) shows the URI without userinfo or query.
"""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

import pytest


from mlflow.tracking import MlflowClient  # noqa: E402

from dashboards.loader import load_experiment  # noqa: E402
from dashboards.report import build_report, main, render_report  # noqa: E402
from support.mlflow_fixtures import sqlite_uri, write_fixture_experiment  # noqa: E402
from support.plans import tiny_args  # noqa: E402
from sweeps.cli import plan_from_argv  # noqa: E402
from sweeps.depth_vs_error import STUDY  # noqa: E402
from tracking.store import masked_uri, refuse_password  # noqa: E402

ADVICE = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture
def no_server_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MLflow HTTP retries: a URI that was not refused fails fast on the closed port instead of hanging."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def credential_uris() -> list[tuple[str, str]]:
    """(URI, its secret): a password, and a token passed as the user name."""
    password, token = secrets.token_hex(8), secrets.token_hex(8)
    return [(f"http://alice:{password}@127.0.0.1:1", password), (f"http://{token}@127.0.0.1:1", token)]


@pytest.mark.parametrize("uri, secret", credential_uris(), ids=["password", "token-as-user"])
@pytest.mark.parametrize("source", ["flag", "environment"])
def test_the_report_refuses_credentials_in_the_tracking_uri_before_any_work(
        uri, secret, source, no_server_waits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out" / "report.html"
    argv = ["--experiment", "X", "--out", str(out)]
    if source == "flag":
        argv += ["--tracking-uri", uri]
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert main(argv) == 2
    captured = capsys.readouterr()
    error = captured.err
    assert error.startswith("error: --tracking-uri") and "http://***@127.0.0.1:1" in error, error
    assert all(name in error for name in ADVICE), error
    assert ("$MLFLOW_TRACKING_URI" in error) == (source == "environment"), error
    assert secret not in error + captured.out
    assert list(tmp_path.iterdir()) == []  # no page, no output folder, no store
    with pytest.raises(ValueError, match=r"--tracking-uri"):  # the library call refuses it as well
        build_report("X", uri if source == "flag" else None, out=out, log_to_parent=False)
    assert list(tmp_path.iterdir()) == []


def test_the_sweep_plan_refuses_a_token_as_user_name(tmp_path):
    token = secrets.token_hex(8)
    argv = tiny_args("--experiment", "x", "--tracking-uri", f"http://{token}@127.0.0.1:1/",
                     "--storage-path", str(tmp_path / "rr"))
    with pytest.raises(ValueError, match=r"holds a user name") as refused:
        plan_from_argv(STUDY, argv)
    message = str(refused.value)
    assert token not in message and "http://***@127.0.0.1:1/" in message and "MLFLOW_TRACKING_TOKEN" in message
    assert not (tmp_path / "rr").exists()


@pytest.mark.parametrize("uri, shown", [
    ("http://alice:pw@host:5000/path?token=t#f", "http://***@host:5000/path?***"),
    ("https://tok@host", "https://***@host"),
    ("sqlite:////tmp/s/mlflow.db?token=t", "sqlite:////tmp/s/mlflow.db?***"),
    ("postgresql://mlflow@db/mlflow?host=/run/pg", "postgresql://***@db/mlflow?***"),
    ("http://host:5000", "http://host:5000"),
    ("file:///tmp/a@b/mlruns", "file:///tmp/a@b/mlruns"),  # an @ in a path is no userinfo
])
def test_a_uri_is_shown_without_userinfo_or_query(uri, shown):
    assert masked_uri(uri) == shown


def test_a_database_url_may_name_its_user_but_an_http_url_may_not():
    """A database driver reads the password from elsewhere (PGPASSWORD), so ``postgresql://user@db`` stays
    allowed (the cluster's documented form); over HTTP a user name alone is a token."""
    refuse_password("postgresql://optuna@db.internal/optuna", "--optuna-storage", "")
    refuse_password("sqlite:////tmp/a@b/mlflow.db", "--tracking-uri", "")
    for uri in ("https://TOKEN@host", "postgresql://optuna:pw@db/optuna"):
        with pytest.raises(ValueError, match=r"\*\*\*@"):
            refuse_password(uri, "--tracking-uri", "")


def test_the_page_and_its_logged_copy_show_no_query_or_userinfo_of_the_store(tmp_path):
    """A real SQLite store read through a URI with a secret in its query: the page, and the report.html
    logged to the sweep run, name the store without it."""
    store = sqlite_uri(tmp_path)
    fixture = write_fixture_experiment(store, "leak", depths=(20,), seeds=1, points=4, artifacts=False,
                                       with_failed=False, with_diverged=False)
    secret = secrets.token_hex(8)
    out = build_report("leak", f"{store}?token={secret}", out=tmp_path / "page" / "report.html")
    page = out.read_text(encoding="utf-8")
    logged = Path(MlflowClient(store).download_artifacts(fixture.parent_run_id, "report.html",
                                                         str(tmp_path / "downloaded")))
    for html in (page, logged.read_text(encoding="utf-8")):
        assert f"<code>{store}?***</code>" in html  # the store is still named
        assert secret not in html and "token=" not in html
    # userinfo too, should data ever carry it: the page prints the URI masked, whatever it was read through
    data = dataclasses.replace(load_experiment("leak", store), tracking_uri=f"http://{secret}@host:5000/?token=x")
    page = render_report(data)
    assert secret not in page and "<code>http://***@host:5000/?***</code>" in page
