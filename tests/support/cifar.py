"""A tiny CIFAR-10 in the real on-disk format (Python 2 pickles, md5-checked by torchvision): the tests' only
CIFAR, since the real one cannot be had here."""

from __future__ import annotations

import hashlib
import io
import pickle
import struct
from pathlib import Path

import numpy as np

PER_FILE = 20  # images per CIFAR batch file written by the tests
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]


class _Py2Str(bytes):
    """A Python 2 ``str``: the type of the keys and names in CIFAR's pickles (written by Python 2)."""


class _Py2Pickler(pickle._Pickler):
    """Protocol-2 pickler that writes ``_Py2Str`` as Python 2 strings (BINSTRING opcodes), as CIFAR's
    files hold them: they load as ``b"data"`` with ``encoding="bytes"`` and as ``"data"`` with latin1."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj: _Py2Str) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + bytes(obj))
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + bytes(obj))

    dispatch[_Py2Str] = save_py2str


def _write_pickle(path: Path, obj: dict) -> str:
    """Write ``obj`` the way CIFAR's Python 2 files are written; return the file's md5."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    path.write_bytes(buffer.getvalue())
    return hashlib.md5(buffer.getvalue()).hexdigest()


def image_batch(index: int) -> tuple[np.ndarray, list[int]]:
    """PER_FILE images of file ``index``: uint8 rows of 3072 (R, G, B planes, each 32×32 row-major)."""
    rng = np.random.default_rng(100 + index)
    data = rng.integers(0, 256, size=(PER_FILE, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, size=PER_FILE)]
    return data, labels


def write_cifar10(folder: Path) -> tuple[dict[str, str], str]:
    """Write a 100-train / 20-test CIFAR-10 into ``folder``; returns each batch file's md5 and the meta file's."""
    folder.mkdir()
    sums = {}
    for i, name in enumerate(TRAIN_FILES + ["test_batch"]):
        data, labels = image_batch(i)
        filenames = [_Py2Str(f"img_{i}_{j}.png".encode()) for j in range(PER_FILE)]
        sums[name] = _write_pickle(folder / name, {
            _Py2Str(b"batch_label"): _Py2Str(f"batch {i}".encode()),
            _Py2Str(b"labels"): labels,
            _Py2Str(b"data"): data,
            _Py2Str(b"filenames"): filenames,
        })
    names = [_Py2Str(n.encode()) for n in ("airplane", "automobile", "bird", "cat", "deer",
                                           "dog", "frog", "horse", "ship", "truck")]
    meta_md5 = _write_pickle(folder / "batches.meta", {
        _Py2Str(b"num_cases_per_batch"): PER_FILE, _Py2Str(b"label_names"): names, _Py2Str(b"num_vis"): 3072,
    })
    return sums, meta_md5
