"""Knowledge errors: each maps to the HTTP status that fits it, in the platform's error shape."""

from __future__ import annotations

from datapilot.core.errors import InvalidRequestError, NotFoundError


class UnsupportedFileError(InvalidRequestError):
    status_code = 415
    default_code = "unsupported_file_type"


class FileTooLargeError(InvalidRequestError):
    status_code = 413
    default_code = "file_too_large"


class DocumentParseError(InvalidRequestError):
    status_code = 422
    default_code = "unparseable_document"


class SpaceNotFoundError(NotFoundError):
    default_code = "space_not_found"


class DocumentNotFoundError(NotFoundError):
    default_code = "document_not_found"
