"""The one table (app.errors.DOMAIN_ERRORS) that gives each status-free error of the
services its HTTP status and code: a new error without a row would answer 500."""

from __future__ import annotations

import pytest

from app.errors import DOMAIN_ERRORS, describe_error
from app.services import errors

SERVICE_ERRORS = sorted(
    (
        found
        for found in vars(errors).values()
        if isinstance(found, type)
        and issubclass(found, errors.ServiceError)
        and found is not errors.ServiceError
    ),
    key=lambda error: error.__name__,
)


@pytest.mark.parametrize("error", SERVICE_ERRORS, ids=lambda error: error.__name__)
def test_every_service_error_has_its_row(error: type[errors.ServiceError]) -> None:
    assert error in DOMAIN_ERRORS


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (errors.InvalidInput, 422, "validation_error"),
        (errors.Malformed, 400, "bad_request"),
        (errors.MalformedJson, 400, "malformed_json"),
        (errors.SpaceMismatch, 409, "embedding_space_mismatch"),
        (errors.TooLarge, 413, "payload_too_large"),
        (errors.QueueFull, 429, "overloaded"),
    ],
)
def test_each_answers_with_its_documented_status_and_code(
    error: type[errors.ServiceError], status: int, code: str
) -> None:
    """The status and code clients match on (docs/api-by-example.md, the error table);
    the message is the error's own words."""
    assert describe_error(error("say what to do")) == (status, code, "say what to do")
