"""Request and response models of the detection API (also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UrlInput(Strict):
    url: str = Field(
        description="http(s) URL of the image; private, loopback and link-local hosts are refused."
    )
    explain: bool = Field(False, description="Also generate the model's reason.")


class Feedback(Strict):
    prediction_id: str = Field(pattern=r"^[0-9a-f]{32}$", description="From a /v1/detect answer.")
    label: Literal["synthetic", "authentic"] = Field(description="The correct label of that image.")


class ReloadInput(Strict):
    model: str | None = Field(
        None,
        description="models:/name/7, models:/name@alias or a folder; "
        "default models:/{model_name}@{serving.model_alias}.",
    )


class ModelRef(BaseModel):
    name: str
    version: str | None


class Prediction(BaseModel):
    prediction_id: str
    label: Literal["synthetic", "authentic"]
    p_fake: float
    threshold: float
    model: ModelRef
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
