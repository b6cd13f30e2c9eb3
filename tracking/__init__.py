"""MLflow tracking: one parent run per sweep, exactly one child run per trial — written by the sweeps, read by the
report, so it is a package of its own (imports: resnet_core only; docs/architecture.md).

One job per module (the layout of runs, tags and metrics is in docs/tracking.md):

- ``store``: reaching the store — URIs, retries with back-off, which errors are worth retrying (both sides).
- ``operations``: the table of tracking calls, used live and when re-sending spooled calls (both sides).
- ``spool``: calls the store did not take, kept on disk and re-sent in order (both sides; ``resend`` CLI).
- ``sweep_run``: the sweep's parent run, its driver's liveness, runs a dead driver left open (driver).
- ``trial_run``: a trial's one run, reopened on retries and restores (trial process).
- ``search_params``: the ``search.*`` params (driver writes, report reads), and what a budget lets a search expect.
"""
