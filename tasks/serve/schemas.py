"""Request and response models of the detection API (also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The verdicts an answer may carry: "uncertain" within serving.abstain_margin of the deciding stage's threshold.
Label = Literal["synthetic", "authentic", "uncertain"]
MAX_URL_CHARS = 2048


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UrlInput(Strict):
    url: str = Field(
        max_length=MAX_URL_CHARS,
        description="http(s) URL of the image; private, loopback and link-local hosts are refused.",
    )
    explain: bool = Field(False, description="Also generate the model's reason.")


class Feedback(Strict):
    prediction_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="From a /v1/detect answer.")
    label: Literal["synthetic", "authentic"] = Field(description="The correct label of that image.")


class FeedbackAnswer(BaseModel):
    status: Literal["claim_recorded", "label_stored"] = Field(
        description="claim_recorded: kept for review, no label changes; label_stored: a trusted label."
    )
    prediction_id: str
    label: Literal["synthetic", "authentic"]
    trusted: bool = Field(description="Whether the sender's token has the 'relabel' scope.")
    duplicate: bool = Field(description="The same feedback was already recorded: nothing new was written.")
    message: str


class ReloadInput(Strict):
    model: str | None = Field(
        None,
        max_length=300,
        description="models:/{model_name}/<version> or models:/{model_name}@<alias>; "
        "default models:/{model_name}@{serving.model_alias}.",
    )


class ReloadAnswer(BaseModel):
    status: Literal["reloaded"]
    model: dict[str, Any]
    previous: dict[str, Any] | None


class ModelRef(BaseModel):
    name: str
    version: str | None


class Provenance(BaseModel):
    """What the upload's own metadata claims; reported beside P(fake), never mixed into it."""

    label: Literal["real", "fake"]
    evidence: str = Field(description="c2pa | iptc | png_parameters: which metadata said so.")
    generator: str | None = None


class Prediction(BaseModel):
    prediction_id: str
    label: Label
    p_fake: float = Field(
        description="P(fake) of the deciding stage (the probe's is calibrated); compare it with `threshold`."
    )
    threshold: float = Field(description="The deciding stage's threshold.")
    stage: Literal["probe", "vlm"] = Field(
        description="Which detector decided (the cascade's first or second stage)."
    )
    model: ModelRef
    provenance: Provenance | None = Field(
        None, description="Provenance metadata found in the upload, if any."
    )
    latency_ms: float
    explanation: str | None = None


class Rejected(BaseModel):
    """A file of a batch that could not be scored; the batch's other files still are."""

    file: str
    status: int
    error: str
    message: str


class BatchPredictions(BaseModel):
    predictions: list[Prediction | Rejected] = Field(description="One entry per file, in the order sent.")
    latency_ms: float


def upload_body(many: bool) -> dict[str, Any]:
    file_schema = {"type": "string", "format": "binary"}
    upload = {
        "type": "object",
        "required": ["file"],
        "properties": {
            "file": {"type": "array", "items": file_schema} if many else file_schema,
            "explain": {"type": "boolean"},
        },
    }
    content: dict[str, Any] = {"multipart/form-data": {"schema": upload}}
    if not many:
        content["application/json"] = {"schema": UrlInput.model_json_schema()}
    return {"requestBody": {"required": True, "content": content}}


def json_body(model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    """The OpenAPI request body of a route that parses its JSON itself (see routes.parse_json)."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
