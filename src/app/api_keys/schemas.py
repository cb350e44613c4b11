from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.auth.scopes import Scope
from app.core.schemas import NO_NUL


def _unique(scopes: list[Scope]) -> list[Scope]:
    return sorted(set(scopes))


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "nightly sync", "scopes": ["items:read"], "expires_in_days": 90}]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=100, pattern=NO_NUL)]
    scopes: Annotated[list[Scope], Field(min_length=1), AfterValidator(_unique)]
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    name: str
    prefix: str = Field(description="Shown to tell keys apart; not secret.")
    scopes: list[Scope]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None = Field(description="Updated at most once a minute.")


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself, shown this once: send it as X-API-Key.")
