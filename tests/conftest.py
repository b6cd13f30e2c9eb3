"""Shared fixtures (one embedded Ray per session, private Ray temp dirs, a tiny CIFAR-10) and the markers that
let the fast unit tests run alone: ``ray`` is set on every test that uses a Ray runtime (a fixture below, or
explicitly), ``browser``, ``cluster`` and ``slow`` by the modules and tests themselves (pyproject.toml lists them).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from torchvision.datasets import CIFAR10

from support.cifar import TRAIN_FILES, write_cifar10
from support.imagenet import write_imagenet

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings from any test, however it is run

RAY_FIXTURES = {"ray_runtime", "ray_tmp"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RAY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_runtime():
    """A real local Ray runtime shared by every test that needs one."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=4, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def ray_tmp():
    """A private Ray temp dir for a driver started as a subprocess (short: Ray's unix socket paths have a
    length limit)."""
    path = tempfile.mkdtemp(prefix="rk", dir="/tmp")
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


@pytest.fixture
def cifar_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny CIFAR-10 under tmp_path (support/cifar.py), with torchvision expecting its md5 sums."""
    sums, meta_md5 = write_cifar10(tmp_path / "cifar-10-batches-py")
    # Real integrity check, against the sums of the files we wrote instead of the real data set's.
    monkeypatch.setattr(CIFAR10, "train_list", [[name, sums[name]] for name in TRAIN_FILES])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": meta_md5})
    return tmp_path




@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated ImageNet tree in torchvision's layout, dirty files included (support/imagenet.py), one per module."""
    return write_imagenet(tmp_path_factory.mktemp("imagenet") / "torchvision")
