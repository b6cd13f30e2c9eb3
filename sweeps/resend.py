"""Send tracking calls a sweep could not deliver (the tracking store was unreachable) to MLflow.

    python -m sweeps.resend ray_results/depth_vs_error --tracking-uri URI                 # a sweep's storage dir
    python -m sweeps.resend ray_results/depth_vs_error/tracking_spool --tracking-uri URI  # or its spool dir

The tracking URI is the sweep's (``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``): never one a spool line
names, since spools may sit on shared storage where anyone with write access could forge a line.

Calls are sent in the order they were made, with their original timestamps, so sending twice logs
nothing twice. A line that can never be sent (unparseable, refused, or rejected by the store as a bad request)
moves to ``<spool>.rejected`` and the rest goes on; a spool file that is a symbolic link or another user's is
refused, and the other files go on. Run it when no sweep is writing to that directory. Exit code 0 when
everything was sent or set aside, 1 when calls are still unsent or a spool file was refused.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tracking.spool import send_spools, spool_files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.resend", description=__doc__.strip().splitlines()[0])
    parser.add_argument("directory", help="a sweep's storage directory (<storage-path>/<experiment>) or its "
                                          "tracking_spool directory")
    parser.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                        help="the sweep's tracking store (default: $MLFLOW_TRACKING_URI); required")
    args = parser.parse_args(argv)
    if not args.tracking_uri:
        parser.error("give the sweep's tracking store with --tracking-uri URI (or set MLFLOW_TRACKING_URI)")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    files = spool_files(args.directory)
    if not files:
        print(f"nothing to send: no spooled tracking calls under {args.directory}")
        return 0
    done = send_spools(args.directory, tracking_uri=args.tracking_uri)
    where = Path(files[0]).parent
    if done.set_aside:
        print(f"warning: {done.set_aside} spooled line(s) can never be sent (see the log above); moved to "
              f"*.rejected in {where}", file=sys.stderr)
    if done.refused:
        print(f"error: {len(done.refused)} spool file(s) refused (a symbolic link, another user's, or unreadable: "
              f"a local file problem, not the tracking store): {', '.join(map(str, done.refused))}", file=sys.stderr)
    if done.left:
        print(f"error: {done.left} tracking call(s) still unsent (is the tracking store up?); they stay in "
              f"{where}", file=sys.stderr)
    if done.left or done.refused:
        return 1
    print(f"sent all spooled tracking calls from {len(files)} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
