"""ground/errors.py local_error: an OSError about the machine (no space, read-only, permission, a path that
cannot be used) becomes one line naming the path and the fix, exit 6; any other OSError stays a bug."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ground.errors import LocalEnvironmentError, local_error


def error(code: int, path: Path) -> OSError:
    return OSError(code, os.strerror(code), str(path))


@pytest.mark.parametrize(("code", "says"), [
    (errno.ENOSPC, "no space left on the device"),
    (errno.EDQUOT, "no space left on the device"),
    (errno.EROFS, "the file system is read-only"),
    (errno.ENOTDIR, "the path cannot be used"),
    (errno.ENAMETOOLONG, "the path cannot be used"),
])
def test_each_kind_names_the_path_and_what_to_do(tmp_path: Path, code: int, says: str) -> None:
    target = tmp_path / "data" / "event_log.parquet"
    found = local_error(error(code, target), doing="write")
    assert isinstance(found, LocalEnvironmentError) and found.exit_code == 6
    text = str(found)
    assert f"cannot write {target}: {says}" in text
    assert "\n" not in text and ". " in text  # one line: what, then what to do


def test_a_folder_of_another_user_names_its_owner_and_the_chown(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir()
    owner = state.stat().st_uid
    monkeypatch.setattr(os, "geteuid", lambda: owner + 1000)  # l2c runs as someone else than the folder's owner
    text = str(local_error(error(errno.EACCES, state / "lead.json")))
    assert "belongs to" in text and f"uid {owner}" in text and f"l2c runs as uid {owner + 1000}" in text
    assert f"chown -R $(id -un) {state / 'lead.json'}" not in text  # the file does not exist: its folder is named
    assert f"chown -R $(id -un) {state}" in text


def test_permission_denied_to_its_owner_points_at_the_attributes(tmp_path: Path) -> None:
    text = str(local_error(error(errno.EPERM, tmp_path / "x"), doing="replace"))
    assert text.startswith(f"cannot replace {tmp_path / 'x'}: permission denied") and "lsattr" in text


@pytest.mark.parametrize("code", [errno.EBADF, errno.EINVAL, errno.EIO, None])
def test_any_other_os_error_is_not_the_environment(tmp_path: Path, code: int | None) -> None:
    exc = OSError(code, "x", str(tmp_path)) if code is not None else OSError("no errno")
    assert local_error(exc) is None
