"""Shared building blocks for request bodies."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


def example_config(*examples: dict[str, Any]) -> ConfigDict:
    """A request body's config: unknown fields refused, and examples for OpenAPI."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class PartialUpdate(BaseModel):
    """A PATCH body: every field may be left out, but only those in `nullable` may be
    sent as null (null clears them); unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    nullable: ClassVar[frozenset[str]] = frozenset()

    @field_validator("*")
    @classmethod
    def _null_only_where_allowed(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.nullable:
            msg = "cannot be null; leave the field out to keep its value"
            raise ValueError(msg)
        return value
