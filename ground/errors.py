"""Every error l2c raises on purpose, grouped by what the runner must do about it.

    L2CError                      exit 1 unless a subclass says otherwise
    ├── ConfigError               exit 2  bad configuration or usage: fix the setting named
    ├── AuthError                 exit 3  the credential or app registration is wrong
    │   └── PermissionDenied      exit 3  authenticated, but a privilege is missing
    ├── SourceUnavailable         exit 4  Dataverse kept failing after every retry
    ├── RunLocked                 exit 5  another run holds the data directory
    └── RequestRejected           exit 1  Dataverse refused one request (4xx with an error code); callers
                                          that know the code (change tracking off, expired delta token)
                                          handle it, anything else is reported with the code

Foreign exceptions (requests, MSAL) become these only in connector/http.py and connector/auth.py.
The CLI catches L2CError once and prints `str(err)`: one line saying what, why and what to do.
"""

from __future__ import annotations


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
