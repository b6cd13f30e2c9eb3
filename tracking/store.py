"""Reaching the MLflow store: URIs, bounded HTTP retries, back-off, and which errors are worth retrying.

Runs in the driver and in trial processes alike.
"""

from __future__ import annotations

import logging
import os
import random
import sqlite3
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

# MLflow errors that retrying cannot fix: the request itself is wrong. Anything else (connection refused,
# timeouts, HTTP 5xx, a locked SQLite file) is treated as the store being temporarily unavailable.
PERMANENT_ERRORS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                    "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_STATE")
STORE_ERRORS = (MlflowException, sqlite3.OperationalError, OSError)
# The MLflow UI opens an experiment on the page of its kind; this one says "training runs", not GenAI traces.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable path, ...)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for any other store)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def absolute_tracking_uri(uri: str) -> str:
    """Make a local store URI absolute, so trials in other working directories write to the same store."""
    if (path := sqlite_path(uri)) is not None:
        return f"sqlite:///{path.resolve()}"
    if "://" not in uri:  # a bare path: MLflow's file store
        return str(Path(uri).resolve())
    return uri


class SecretInURIError(ValueError):
    """A URI carries a secret (a password, or a token as its user name) that would be copied wherever it goes."""


# Schemes whose user name alone is a secret: an HTTP user name without password is how a token is passed
# (``https://TOKEN@host``). A database URL names its user; its driver reads the password elsewhere (PGPASSWORD).
TOKEN_AS_USER_SCHEMES = ("http", "https")


def refuse_password(uri: str, flag: str, instead: str) -> None:
    """Refuse a URI that carries a secret in its userinfo: a password, or (http/https) a user name alone, which
    is a token. It would be copied into the sweep's plan, Tune's pickled state, every trial's records, the
    report's page and the process list. Raises SecretInURIError (the userinfo masked) saying ``instead``."""
    try:
        parts = urlsplit(uri)
        password, user = parts.password, parts.username
    except ValueError:  # not parseable as a URL: it carries no recognisable userinfo
        return
    if password:
        held = "a password"
    elif user and parts.scheme.lower() in TOKEN_AS_USER_SCHEMES:
        held = "a user name, which in an HTTP URL is a token (http://TOKEN@host)"
    else:
        return
    raise SecretInURIError(f"{flag} {masked_uri(uri)} holds {held}, which would be copied into the sweep's "
                           f"records and the report; {instead}")


def masked_uri(uri: str) -> str:
    """``uri`` fit to show (messages, the report's page): its userinfo and query replaced by ***, no fragment."""
    try:
        parts = urlsplit(uri)
    except ValueError:  # not parseable: nothing of it is shown
        return "***"
    shown, _, query = uri.partition("#")[0].partition("?")
    if "@" in parts.netloc:  # the netloc's first occurrence is right after scheme://
        shown = shown.replace(parts.netloc, f"***@{parts.netloc.rpartition('@')[2]}", 1)
    return f"{shown}?***" if query else shown


def is_local_store(uri: str) -> bool:
    """True for stores that only processes on this machine can reach (SQLite, a local file store)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def bound_http_retries(uri: str) -> None:
    """Keep one MLflow HTTP call short (the sweep retries with its own back-off, then spools).

    MLflow's defaults retry a refused connection 7 times with exponential back-off (minutes of blocking)
    and wait 120 s for an answer. Explicit settings in the environment win.
    """
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Raise TrackingError when the store cannot be reached or created (checks only: creates nothing)."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingError(f"tracking server {uri} answered /health with HTTP {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"tracking server {uri} is unreachable ({exc}); start it, or pass "
                                f"--tracking-uri sqlite:///PATH/mlflow.db for a local store") from None
        return
    if (store := sqlite_path(uri)) is not None and (directory := unwritable_directory(store)) is not None:
        raise TrackingError(f"cannot create the SQLite tracking store {uri}: {directory} is not a writable directory")


def unwritable_directory(path: Path) -> Path | None:
    """What stops a file at ``path`` from being created: its nearest existing ancestor, when that is not a
    writable directory; None when the file (and any missing directories above it) can be created."""
    directory = next((p for p in (path.parent, *path.parent.parents) if p.exists()), Path("/"))
    return None if directory.is_dir() and os.access(directory, os.W_OK) else directory


def is_transient(exc: BaseException) -> bool:
    """True when retrying later may succeed (the store is busy or unreachable), False for a bad request."""
    if isinstance(exc, MlflowException):
        return exc.error_code not in PERMANENT_ERRORS
    return isinstance(exc, (sqlite3.OperationalError, OSError))


def with_retries(action: Callable[[], T], what: str, attempts: int = 8, first_wait: float = 0.2,
                 patience: float = 0.0) -> T:
    """Run a tracking call, retrying with exponential back-off (at most 30 s apart) on a busy or unreachable
    store: ``attempts`` times, or, with ``patience``, for that many seconds."""
    wait, give_up, attempt = first_wait, time.monotonic() + patience, 0
    while True:
        attempt += 1
        try:
            return action()
        except STORE_ERRORS as exc:
            out_of_tries = time.monotonic() >= give_up if patience else attempt >= attempts
            if out_of_tries or not is_transient(exc):
                raise
            shown = f"{attempt}, for up to {patience:.0f}s" if patience else f"{attempt}/{attempts}"
            log.warning("MLflow %s failed (attempt %s): %s; retrying in %.1fs", what, shown, short_error(exc), wait)
            time.sleep(wait * (1 + random.random() / 2))
            wait = min(wait * 2, 30.0)


def filter_value(text: str) -> str:
    """``text`` as a quoted string of an MLflow search filter (``f"tags.x = {filter_value(v)}"``).

    MLflow's filter grammar has no escape inside a quoted string (it strips the outer quotes and keeps the
    rest), so the value is quoted with the quote character it does not hold. Raises ValueError, naming the
    value, when it holds both (check_names refuses such names before anything is created)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"{text!r} holds both quote characters (' and \"), which MLflow's search filters cannot "
                     f"match: use a name with at most one kind of quote")


def experiment_id_for(client: MlflowClient, name: str, create: bool) -> str | None:
    """The id of experiment ``name`` (restored if deleted); created, tagged with its kind, when ``create``."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        if create and experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return experiment.experiment_id
    if not create:
        return None
    return client.create_experiment(name, artifact_location=artifact_location_for(client.tracking_uri),
                                    tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})


def artifact_location_for(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside it (``mlartifacts/``), so store and artifacts move together.

    MLflow's default is ``./mlruns`` of whichever process creates the experiment: under ``ray job submit``
    that is a temporary copy of the working directory, which Ray deletes.
    """
    if (path := sqlite_path(uri)) is not None:
        return (path.parent / "mlartifacts").as_uri()
    return None  # a tracking server decides where its artifacts go


def short_error(exc: BaseException | None) -> str:
    """The first line of an error, at most 300 characters (for one-line warnings)."""
    text = str(exc).splitlines()[0] if exc is not None and str(exc) else type(exc).__name__
    return text[:300]
