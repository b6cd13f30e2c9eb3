"""The Plotly/pandas report over a sweep's MLflow runs: loader, statistics, verdicts, figures, sections, page.
Runs in the driver at the end of a sweep or on the user's machine (``python -m dashboards.report``), never in a trial."""
