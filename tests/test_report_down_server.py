"""The report against a tracking server that is down: one clear line and exit code 2 within seconds, not four
minutes of MLflow's retries and five tracebacks (issue 30). Both shapes of down: nothing listens, and a host
that accepts connections but never answers."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from support.processes import free_port

BOUND_S = 60  # the report took 250 s here before; the check itself allows 5 s per probe


@pytest.fixture
def silent_server():
    """A loopback port that accepts TCP connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.mark.parametrize("shape", ["refused", "silent"])
def test_a_down_server_gets_one_line_and_exit_2(shape, request, tmp_path):
    uri = f"http://127.0.0.1:{free_port()}" if shape == "refused" else request.getfixturevalue("silent_server")
    done = subprocess.run([sys.executable, "-m", "dashboards.report", "--experiment", "depth_vs_error",
                           "--tracking-uri", uri, "--out", str(tmp_path / "r.html")],
                          capture_output=True, text=True, timeout=BOUND_S)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"error: tracking server {uri} is unreachable"), lines
    assert "Traceback" not in done.stderr and not (tmp_path / "r.html").exists()
