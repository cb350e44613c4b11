from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, model_validator

from app.core.schemas import PartialUpdate, example_config
from app.models import Role


def _lower(value: str) -> str:
    return value.lower()


def _letter_and_digit(value: str) -> str:
    if not any(char.isalpha() for char in value) or not any(char.isdigit() for char in value):
        msg = "Password must contain at least one letter and one digit"
        raise ValueError(msg)
    return value


# Emails are compared case-insensitively: stored and looked up lower-cased.
Email = Annotated[EmailStr, Field(max_length=320), AfterValidator(_lower)]
# At least 8 characters with a letter and a digit; the upper bound keeps argon2 input sane.
Password = Annotated[
    str,
    Field(min_length=8, max_length=128, json_schema_extra={"format": "password"}),
    AfterValidator(_letter_and_digit),
]
FullName = Annotated[str, Field(min_length=1, max_length=255)]


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    email: str
    full_name: str | None
    role: Role
    is_active: bool
    created_at: datetime
    updated_at: datetime


class UserUpdateMe(PartialUpdate):
    """Changing the email or the password needs the current password."""

    model_config = example_config(
        {"full_name": "Ada King"},
        {"password": "battery-staple-9", "current_password": "correct-horse-7"},
    )

    nullable = frozenset({"full_name"})

    email: Email | None = None
    full_name: FullName | None = None
    password: Password | None = None
    current_password: Annotated[str, Field(max_length=128)] | None = None

    @model_validator(mode="after")
    def _current_password_for_credentials(self) -> Self:
        if (self.email is not None or self.password is not None) and not self.current_password:
            msg = "current_password is required to change the email or the password"
            raise ValueError(msg)
        return self


class UserAdminUpdate(PartialUpdate):
    model_config = example_config({"role": "admin"}, {"is_active": False})
    nullable = frozenset({"full_name"})

    email: Email | None = None
    full_name: FullName | None = None
    password: Password | None = None
    role: Role | None = None
    is_active: bool | None = None
