"""Errors shared by the data loaders (resnet_core/data.py) and the ImageNet reader (resnet_core/imagenet/)."""


class DatasetUnavailableError(RuntimeError):
    """A data set's files are absent, corrupt or incomplete (and could not be downloaded)."""
