"""The studies as Ray Tune sweeps: ``sweeps/<study>.py`` are the commands, ``cli`` their command line,
``study``/``presets`` the declarations; ``driver/`` runs in the driver, ``trial/`` in trial processes, ``tracking/`` in both."""
