"""Which data a run trains on, as a name, a digest and a source: what MLflow records as a run's dataset input
(its UI's Dataset column and filters). Read from the files' published checksums, ImageNet's file list or the
generator's settings, never by loading the images, so it costs nothing at a run's start.

The digest covers the split too (``val_size``, ``train_limit``): two runs with the same digest trained and were
tested on the same images.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import metadata, resources

from resnet_core.config import DataConfig


@dataclass(frozen=True)
class DataIdentity:
    name: str  # the data set: cifar10, digits, ...
    digest: str  # 16 hex digits of a sha256 over the files' checksums (or the generator's settings) and the split
    source_type: str  # MLflow's word for where it came from: "local" (files) or "code" (generated)
    source: str  # the directory read, or what generated it


def data_identity(config: DataConfig) -> DataIdentity:
    """The identity of the data ``config`` names (validated config: a known data set)."""
    if config.dataset in ("cifar10", "cifar100"):
        from resnet_core.data import cifar_checksums  # torchvision's lists, checked against the files at load

        content, source_type = cifar_checksums(config.dataset), "local"
        source = os.path.abspath(os.path.expanduser(config.data_dir))
    elif config.dataset == "imagenet":
        from resnet_core.imagenet.folders import find_imagenet, survey  # the file list, no image opened

        source = os.path.abspath(os.path.expanduser(config.data_dir))
        content, source_type = survey(find_imagenet(source)).fingerprint, "local"
    elif config.dataset == "digits":
        data = resources.files("sklearn.datasets.data") / "digits.csv.gz"
        content, source_type = hashlib.sha256(data.read_bytes()).hexdigest(), "code"
        source = f"sklearn.datasets.load_digits (scikit-learn {metadata.version('scikit-learn')})"
    else:
        content, source_type, source = config.dataset, "code", f"resnet_core.data ({config.dataset})"
    split = {"val_size": config.val_size, "train_limit": config.train_limit}
    digest = hashlib.sha256(json.dumps([content, split], sort_keys=True).encode()).hexdigest()[:16]
    return DataIdentity(config.dataset, digest, source_type, source)
