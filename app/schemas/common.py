"""Field types more than one resource's bodies use, and the error shape of API.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints

from app.ids import check_id

Modality = Literal["image", "text", "audio", "video"]
Scalar = str | int | float | bool | None
CollectionName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ItemId = Annotated[
    str,
    AfterValidator(check_id),
    Field(
        description="1-255 characters after NFC normalisation; no '/', no control, format or "
        "bidi characters, not '.' or '..', no leading or trailing whitespace"
    ),
]
Metadata = dict[str, Any]
MAX_TEXT_CHARS = 20_000
# A text to store or to encode: an item's, a query's, one of /v1/embed's.
InputText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]


def _not_a_bool(value: Any) -> Any:
    """JSON true and false are not numbers: pydantic's lax mode would read them as 1 and 0,
    which the OpenAPI document (integer, number) refuses."""
    if isinstance(value, bool):
        raise ValueError("a number is needed, not true or false")
    return value


NoBool = BeforeValidator(_not_a_bool)


class ErrorDetail(BaseModel):
    """The error of one entry of a batch (a failed call's body is app.errors.error_body)."""

    code: str
    message: str


# A model id a collection can record (models.encoders.registry.parse_model_id's syntax, but
# ``auto``, which is a choice, not one space).
MODEL_ID_PATTERN = (
    r"^(mmr-mini|mmr-mini@[^\x00-\x1f\x7f]+|random:[^\x00-\x1f\x7f]+"
    r"|open_clip:[^\x00-\x1f\x7f/@]+[/@][^\x00-\x1f\x7f]+)$"
)
# An audio tower as MMR_AUDIO_MODEL names it (parse_audio_id's syntax).
AUDIO_ID_PATTERN = r"^(|none|clap:[^\x00-\x1f\x7f]+)$"
