"""What runs only in the sweep's driver: the plan and its checks (resources, security), the machinery every sweep
shares, the grid run, and ``search/`` for the Optuna search. Never imported by a trial process."""
