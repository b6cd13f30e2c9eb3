"""Security settings a sweep runs with: refuse an unauthenticated tracking server on the network, and say
which protections are in force. Runs in the driver, before anything starts."""

from __future__ import annotations

import ipaddress
import re
import os
import socket
import stat
from pathlib import Path
from urllib.parse import urlparse

from sweeps.driver.plan import SweepPlan

CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


# A value after one of these words (``--x password=...``, ``TOKEN=...``) is taken for a secret.
SECRET_WORDS = re.compile(r"(?i)((?:password|passwd|token|secret|api[_-]?key)[^=\s]*=)\S+")
URL_PASSWORD = re.compile(r"(://[^/\s:@]*):[^/\s@]*@")


def scrubbed(argv: list[str]) -> list[str]:
    """``argv`` with anything secret-shaped replaced by ***: a URL's password, the value of a ``...password=``,
    ``...token=``, ``...secret=`` or ``...key=`` setting, and the argument after a flag so named."""
    out, hide_next = [], False
    for arg in argv:
        if hide_next:
            out.append("***")
        else:
            out.append(SECRET_WORDS.sub(r"\1***", URL_PASSWORD.sub(r"\1:***@", arg)))
        hide_next = arg.startswith("--") and "=" not in arg and re.search(r"(?i)password|token|secret|key", arg)
    return out


def has_tracking_credentials() -> bool:
    return all(os.environ.get(name) for name in CREDENTIAL_VARIABLES) or bool(os.environ.get("MLFLOW_TRACKING_TOKEN"))


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (127.0.0.0/8, ::1, localhost)."""
    try:
        return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
    except (socket.gaierror, ValueError):
        return False


def check_tracking_security(plan: SweepPlan, insecure: bool) -> None:
    """Refuse a plain-http tracking server on another host when no credentials are set (anyone who reaches an
    unauthenticated MLflow server can read and delete runs), unless ``insecure`` (--insecure-tracking)."""
    url = urlparse(plan.tracking_uri)
    if url.scheme != "http" or is_loopback(url.hostname or "") or has_tracking_credentials() or insecure:
        return
    raise ValueError(f"the tracking server {plan.tracking_uri} is on the network over plain http and no credentials "
                     f"are set: set {' and '.join(CREDENTIAL_VARIABLES)} for a server with basic auth (cluster/README.md),"
                     f" or pass --insecure-tracking to send to an unauthenticated server anyway")


def check_ray_security(insecure: bool) -> None:
    """Refuse to join a Ray cluster (RAY_ADDRESS) without token authentication (RAY_AUTH_MODE=token): a
    cluster that admits this client unauthenticated admits anyone on its network to run code on every node.
    ``insecure`` (--insecure-ray) joins anyway. The embedded local Ray is not affected."""
    address = os.environ.get("RAY_ADDRESS")
    if not address or os.environ.get("RAY_AUTH_MODE") == "token" or insecure:
        return
    raise ValueError(f"the Ray cluster {address} would be joined without token authentication (RAY_AUTH_MODE "
                     f"is not 'token'): start the cluster with token auth and set RAY_AUTH_MODE=token and the "
                     f"token (cluster/README.md), or pass --insecure-ray to join an unauthenticated cluster anyway")


def check_private_storage(plan: SweepPlan) -> None:
    """Refuse local storage that other users may write to. The storage is trusted as the sweep's user's own:
    ``--resume`` unpickles Tune's state from it and ``resend`` sends its spooled calls with the user's tracking
    credentials, so a stranger able to write there could run code or change runs as that user. The storage
    directory and the sweep's directory in it, where they exist, must belong to this user and not be writable by
    others, nor by a group other than the user's own primary group; the nearest existing folder above them must
    not be writable by others unless sticky (/tmp).
    Remote storage (s3://, gs://) is the bucket's permissions' job. Reads only."""
    if not plan.is_local_storage:
        return
    sweep_dir, storage = Path(plan.sweep_id), Path(plan.storage_path)
    for place in (sweep_dir, storage):
        if place.exists():
            info = place.stat()
            if info.st_uid != os.getuid():
                raise ValueError(f"the storage {place} belongs to uid {info.st_uid}, not to this user "
                                 f"({os.getuid()}): a sweep's storage must be its user's own (--resume unpickles "
                                 f"Tune's state from it); choose another --storage-path")
            # Writable by its group only where that group is this user's own primary group (a per-user group,
            # or KubeRay's fsGroup, which makes the shared volume group-writable for the pods' own gid).
            group_may_write = info.st_mode & stat.S_IWGRP and info.st_gid != os.getgid()
            if group_may_write or info.st_mode & stat.S_IWOTH:
                raise ValueError(f"the storage {place} is writable by {_writers(info.st_mode)} (mode "
                                 f"{stat.filemode(info.st_mode)}): a sweep's storage must be its user's own "
                                 f"(--resume unpickles Tune's state from it); run chmod go-w {place}, or choose "
                                 f"another --storage-path")
    above = next(p for p in storage.parents if p.exists())
    mode = above.stat().st_mode
    if mode & stat.S_IWOTH and not mode & stat.S_ISVTX:
        raise ValueError(f"{above}, the folder the storage {storage} would be made in, is writable by anyone and not "
                         f"sticky (mode {stat.filemode(mode)}): another user could make the storage first; choose "
                         f"another --storage-path")


def _writers(mode: int) -> str:
    return " and ".join(who for who, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH)) if mode & bit)


def security_lines(plan: SweepPlan, insecure: bool) -> list[str]:
    """What protects this sweep, one line each (printed at its start)."""
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        ray_line = "embedded local Ray (this process only, no dashboard)"
    elif os.environ.get("RAY_AUTH_MODE") == "token":
        ray_line = f"cluster {address} with token authentication (RAY_AUTH_MODE=token)"
    else:
        ray_line = f"cluster {address} WITHOUT token authentication -- INSECURE: --insecure-ray given"
    url = urlparse(plan.tracking_uri)
    if url.scheme not in ("http", "https"):
        tracking = f"local store {plan.tracking_uri}"
    else:
        auth = "credentials from the environment" if has_tracking_credentials() else "no credentials"
        warning = " -- INSECURE: --insecure-tracking given" if insecure and url.scheme == "http" else ""
        tracking = f"server {url.scheme}://{url.netloc} ({'TLS' if url.scheme == 'https' else 'no TLS'}, {auth}){warning}"
    storage = (f"{plan.storage_path}, this user's own (Tune's state is unpickled from it on --resume)"
               if plan.is_local_storage else f"{plan.storage_path} (its bucket's permissions keep it private)")
    return [f"security: ray: {ray_line}", f"security: tracking: {tracking}", f"security: storage: {storage}"]
