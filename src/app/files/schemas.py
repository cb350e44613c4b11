from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from app.core.schemas import NO_NUL, example_config

# The description sent with an upload (a form field), and its limit.
MAX_DESCRIPTION_CHARS = 1000
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION_CHARS, pattern=NO_NUL)]


class FileRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    filename: str = Field(description="The name it was uploaded with, made safe.")
    content_type: str
    size: int = Field(description="Bytes.")
    sha256: str = Field(description="Hex SHA-256 of the content; also its ETag.")
    description: str | None
    created_at: datetime


class AttachmentCreate(BaseModel):
    model_config = example_config({"file_id": "01a20dd2-005d-79bb-ad87-22376b40605f"})

    file_id: UUID
