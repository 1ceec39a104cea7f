"""Every error l2c raises on purpose, grouped by what the runner must do about it.

    L2CError                      exit 1 unless a subclass says otherwise
    ├── ConfigError               exit 2  bad configuration or usage: fix the setting named
    ├── AuthError                 exit 3  the credential or app registration is wrong
    │   └── PermissionDenied      exit 3  authenticated, but a privilege is missing
    ├── SourceUnavailable         exit 4  Dataverse kept failing after every retry
    ├── RunLocked                 exit 5  another run holds the data directory
    ├── LocalEnvironmentError     exit 6  this machine refuses: disk full, read-only, permission denied, a path
    │                                     that cannot be used (`local_error` turns an OSError into one)
    └── RequestRejected           exit 1  Dataverse refused one request (4xx with an error code); callers
                                          that know the code (change tracking off, expired delta token)
                                          handle it, anything else is reported with the code

Foreign exceptions (requests, MSAL) become these only in connector/http.py and connector/auth.py.
The CLI catches L2CError once and prints `str(err)`: one line saying what, why and what to do.
"""

from __future__ import annotations

import errno
import os
import pwd
from pathlib import Path


class L2CError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str = "", **context: object) -> None:
        self.message = message
        self.hint = hint
        self.context = {k: v for k, v in context.items() if v is not None}
        super().__init__(message)

    def __str__(self) -> str:
        parts = [self.message]
        if self.context:
            parts.append("(" + ", ".join(f"{k}={v}" for k, v in self.context.items()) + ")")
        text = " ".join(parts)
        return f"{text}. {self.hint}" if self.hint else text


class ConfigError(L2CError):
    exit_code = 2


class AuthError(L2CError):
    exit_code = 3


class PermissionDenied(AuthError):
    pass


class SourceUnavailable(L2CError):
    exit_code = 4


class RunLocked(L2CError):
    exit_code = 5


class RequestRejected(L2CError):
    """A 4xx answer other than 401/403/429, with Dataverse's error code (`0x...`)."""

    def __init__(self, message: str, *, status: int, code: str = "", hint: str = "", **context: object) -> None:
        super().__init__(message, hint=hint, status=status, code=code or None, **context)
        self.status = status
        self.code = code


class LocalEnvironmentError(L2CError):
    """The machine l2c runs on refuses: no space, a read-only file system, no permission, a path it cannot use."""

    exit_code = 6


_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
_READ_ONLY = {errno.EROFS}
_NOT_PERMITTED = {errno.EACCES, errno.EPERM}
_PATH = {errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT, errno.EXDEV}
LOCAL_ERRNOS = frozenset(_NO_SPACE | _READ_ONLY | _NOT_PERMITTED | _PATH)


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists (whose owner and mount decide what may be written below it)."""
    for candidate in (path, *path.parents):
        if os.path.lexists(candidate):
            return candidate
    return path


def _owner(path: Path) -> str:
    try:
        uid = path.lstat().st_uid
    except OSError:
        return "another user"
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:  # a uid without a name
        return f"uid {uid}"


def local_error(exc: OSError, path: Path | str | None = None, *, doing: str = "",
                tree: Path | str | None = None) -> LocalEnvironmentError | None:
    """The one-line LocalEnvironmentError for an OSError the machine raised about `path` (default: the error's
    own filename), or None when it is not about the local environment (the caller re-raises: a bug). `tree` is
    the folder to give back whole when `path` belongs to another user (a data directory: whoever wrote one of
    its files wrote others); default: `path` or its nearest existing folder."""
    if exc.errno not in LOCAL_ERRNOS:
        return None
    # An OSError of a write on an open file names none: then the tree it happened in, never a bare ".".
    where = Path(path if path is not None else (exc.filename or tree or "."))
    what = f"cannot {doing} {where}" if doing else f"cannot write {where}"
    if exc.errno in _NO_SPACE:
        return LocalEnvironmentError(f"{what}: no space left on the device that holds it",
                                     hint="Free space there (or point L2C_DATA_DIR at a larger disk) and run again; "
                                          "what already landed is kept")
    if exc.errno in _READ_ONLY:
        return LocalEnvironmentError(f"{what}: the file system is read-only",
                                     hint="Remount it read-write or point L2C_DATA_DIR (or --out) at a writable "
                                          "folder, and run again")
    if exc.errno in _NOT_PERMITTED:
        existing = _existing(where)
        uid = os.geteuid()
        try:
            owner_uid: int | None = existing.lstat().st_uid
        except OSError:
            owner_uid = None
        if owner_uid is not None and owner_uid != uid and uid != 0:
            give_back = _existing(Path(tree)) if tree is not None else existing
            return LocalEnvironmentError(
                f"{what}: permission denied ({existing} belongs to {_owner(existing)}; l2c runs as uid {uid})",
                hint=f"Give it back to the user that runs l2c (e.g. `sudo chown -R $(id -un) {give_back}`) and "
                     "run again")
        # A file is replaced by a rename in its folder: the folder's mode and attributes matter as much as its own.
        check = f"{existing} and its folder" if not existing.is_dir() else f"{existing}"
        return LocalEnvironmentError(f"{what}: permission denied ({exc.strerror})",
                                     hint=f"Check the permissions and attributes of {check} (`ls -ld`, `lsattr -d`: "
                                          "nothing in an immutable folder can be replaced) and run again")
    return LocalEnvironmentError(f"{what}: the path cannot be used ({exc.strerror})",
                                 hint="Point L2C_DATA_DIR (or --out) at an ordinary folder and run again")
