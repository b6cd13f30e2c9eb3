"""A sweep's local storage is its user's own, checked before anything starts (issue 30, item 4): ``--resume``
unpickles Tune's state from it and ``resend`` sends its spooled calls with the user's credentials, so storage
other users may write to is refused, naming the folder and what to do."""

from __future__ import annotations

import os

import pytest

from sweeps import depth_vs_error
from support.plans import store_args, tiny_args

ARGS = ("--depths", "8", "--families", "plain", "--seeds", "1")


def _refused(tmp_path, capsys, storage) -> str:
    """Run the depth study on ``storage``: it must exit 2 having created no store and no experiment folder."""
    argv = [*tiny_args(*ARGS), *store_args(tmp_path), "--storage-path", str(storage)]
    assert depth_vs_error.main(argv) == 2
    assert not (tmp_path / "mlflow.db").exists() and not (storage / "depth_vs_error").exists()
    return capsys.readouterr().err


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another group needs root")
def test_a_storage_another_group_may_write_is_refused_with_the_chmod_that_fixes_it(tmp_path, capsys):
    storage = tmp_path / "ray_results"
    storage.mkdir()
    os.chown(storage, os.getuid(), 65534)
    storage.chmod(0o775)
    err = _refused(tmp_path, capsys, storage)
    assert f"the storage {storage} is writable by its group (mode drwxrwxr-x)" in err
    assert f"chmod go-w {storage}" in err


def test_a_storage_writable_by_the_users_own_group_passes(tmp_path, capsys):
    """As KubeRay's fsGroup leaves the shared volume: group-writable for the pods' own gid. The check passes and
    the command goes on to the next one (here a refused experiment name)."""
    storage = tmp_path / "ray_results"
    storage.mkdir()
    os.chown(storage, os.getuid(), os.getgid())
    storage.chmod(0o2775)
    argv = [*tiny_args(*ARGS), *store_args(tmp_path), "--storage-path", str(storage), "--experiment", """a'b"c"""]
    assert depth_vs_error.main(argv) == 2
    err = capsys.readouterr().err
    assert "writable by" not in err and "both quote characters" in err


def test_a_world_writable_sweep_folder_inside_a_private_storage_is_refused(tmp_path, capsys):
    storage = tmp_path / "ray_results"
    (storage / "depth_vs_error").mkdir(parents=True)
    (storage / "depth_vs_error").chmod(0o777)
    argv = [*tiny_args(*ARGS), *store_args(tmp_path), "--storage-path", str(storage)]
    assert depth_vs_error.main(argv) == 2
    assert "writable by its group and others" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and list((storage / "depth_vs_error").iterdir()) == []


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_a_storage_of_another_user_is_refused(tmp_path, capsys):
    storage = tmp_path / "ray_results"
    storage.mkdir(mode=0o755)
    os.chown(storage, 65534, 65534)
    assert "belongs to uid 65534, not to this user" in _refused(tmp_path, capsys, storage)


def test_a_storage_to_be_made_in_a_folder_anyone_may_write_is_refused_unless_sticky(tmp_path, capsys):
    """Anyone could make the storage there first; /tmp's sticky bit stops that, so the same folder made sticky
    passes this check (the sweep then goes on to the next one, here a refused experiment name)."""
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    err = _refused(tmp_path, capsys, open_folder / "ray_results")
    assert f"{open_folder}, the folder the storage {open_folder / 'ray_results'} would be made in" in err
    open_folder.chmod(0o1777)
    argv = [*tiny_args(*ARGS), *store_args(tmp_path), "--storage-path", str(open_folder / "ray_results"),
            "--experiment", """it's "both\""""]
    assert depth_vs_error.main(argv) == 2
    err = capsys.readouterr().err
    assert "would be made in" not in err and "both quote characters" in err
