"""Errors shared by every layer.

Each error knows the HTTP status and the OpenAI error ``type``/``code`` it maps to, so the HTTP layer
renders it without a lookup table and library users can catch one base class.
"""

from __future__ import annotations


class DataPilotError(Exception):
    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(DataPilotError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class AuthenticationError(DataPilotError):
    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(DataPilotError):
    """The key is valid but may not do this (its level or scopes): 403."""

    status_code = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"


class RateLimitError(DataPilotError):
    """Over a rate limit or a token budget: 429, with ``Retry-After`` seconds (OpenAI's shape)."""

    status_code = 429
    error_type = "requests"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.retry_after = max(1.0, retry_after)

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(int(-(-self.retry_after // 1)))}


class NotFoundError(DataPilotError):
    """A named thing (model, data source, knowledge space, document...) does not exist: 404."""

    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class ConflictError(DataPilotError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class ModelNotReadyError(DataPilotError):
    status_code = 503
    error_type = "server_error"
    default_code = "model_not_ready"


class UpstreamError(DataPilotError):
    """An upstream model endpoint failed; ``status_code`` mirrors the upstream's when it is a 4xx."""

    status_code = 502
    error_type = "upstream_error"

    def __init__(self, message: str, *, status_code: int = 502, **kw: str | None) -> None:
        super().__init__(message, **kw)
        self.status_code = status_code


class ConfigError(DataPilotError):
    error_type = "config_error"


class MissingDependencyError(DataPilotError):
    """An optional dependency is absent; the message names the pip extra that provides it."""

    error_type = "server_error"
    default_code = "missing_dependency"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module!r} is not installed: install it with `pip install 'datapilot[{extra}]'` "
            f"(or run `make run`, which installs every embedded default)"
        )


class UnknownNameError(InvalidRequestError):
    """A name that is not in its registry (operator, tool, backend, ...): refused, never imported."""

    default_code = "unknown_name"


class DuplicateNameError(ConfigError):
    """A registry name is already held by another object; pass ``replace=True`` to replace it."""

    default_code = "duplicate_name"


class NotAllowedError(ConfigError):
    """A plugin tried to register under a name outside its registry's plugin allow-list."""

    default_code = "not_allowed"
