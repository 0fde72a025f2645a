"""Knowledge errors: each maps to the HTTP status that fits it, in the platform's error shape."""

from __future__ import annotations

from datapilot.core.errors import DataPilotError, InvalidRequestError


class UnsupportedFileError(InvalidRequestError):
    status_code = 415
    default_code = "unsupported_file_type"


class FileTooLargeError(InvalidRequestError):
    status_code = 413
    default_code = "file_too_large"


class DocumentParseError(InvalidRequestError):
    status_code = 422
    default_code = "unparseable_document"


class SpaceNotFoundError(DataPilotError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "space_not_found"


class DocumentNotFoundError(DataPilotError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "document_not_found"
