"""Shared building blocks for request bodies."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    GetJsonSchemaHandler,
    ValidationInfo,
    field_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

# PostgreSQL text cannot hold a NUL character: every string that is stored or sent to
# a query says so in its schema, and is refused at validation, not by the database.
NO_NUL = r"^[^\x00]*$"


def openapi_operations(openapi: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every operation of an OpenAPI document, for the passes that amend them."""
    for operations in openapi.get("paths", {}).values():
        yield from operations.values()


def add_component_schemas(
    openapi: dict[str, Any],
    models: tuple[type[BaseModel], ...],
    *,
    mode: Literal["validation", "serialization"] = "serialization",
) -> None:
    """Add `models`, and the models they use, to `components/schemas`: for those that
    responses name by hand (a `$ref` in `responses=`), which FastAPI never sees. Every
    `$ref` then resolves within the document (pydantic's own `$defs` would not)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)
        for name, definition in schema.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas.setdefault(model.__name__, schema)


def drop_null(schema: dict[str, Any]) -> None:
    """Take JSON null out of a schema's `anyOf` (what pydantic writes for `X | None`),
    leaving the one remaining option in place of the `anyOf`."""
    options = schema.get("anyOf")
    if not options:
        return
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) == len(options):
        return
    schema.pop("anyOf")
    if len(kept) == 1:
        schema.update(kept[0])
    else:
        schema["anyOf"] = kept


def example_config(*examples: dict[str, Any]) -> ConfigDict:
    """A request body's config: unknown fields refused, and examples for OpenAPI."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": list(examples)})


class PartialUpdate(BaseModel):
    """A PATCH body: every field may be left out, but only those in `nullable` may be
    sent as null (null clears them); unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
    nullable: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """The documented schema says the same: null only where `nullable` allows it."""
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        for name, prop in target.get("properties", {}).items():
            if name not in cls.nullable:
                drop_null(prop)
        return schema

    @field_validator("*")
    @classmethod
    def _null_only_where_allowed(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.field_name not in cls.nullable:
            msg = "cannot be null; leave the field out to keep its value"
            raise ValueError(msg)
        return value
