"""What runs inside a trial process: the Tune trainable (``workers``: a trial as N Ray Train workers), a trial's
identity (config, name, tags) and the keys it reports. Runs in trial processes (the driver reads the identity
and keys); never imports sweeps.driver."""
