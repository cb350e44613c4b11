from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Self
from uuid import UUID

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)

from app.core.schemas import NO_NUL, PartialUpdate, example_config
from app.models import Role


def normalize_email(value: str) -> str:
    """The one form an address is stored, looked up and compared in: NFKC (a full-width
    `\uff41lice` is `alice`, a ligature its letters), lower case, no surrounding space."""
    return unicodedata.normalize("NFKC", value).strip().lower()


# A letter (a word character that is neither a digit nor `_`) and a digit, in either
# order. The same expression is the documented `pattern` and the check, so the schema
# and the service cannot disagree.
LETTER_AND_DIGIT = r"^[\s\S]*([^\W\d_][\s\S]*\d|\d[\s\S]*[^\W\d_])[\s\S]*$"
_LETTER_AND_DIGIT = re.compile(LETTER_AND_DIGIT)


def _letter_and_digit(value: str) -> str:
    if not _LETTER_AND_DIGIT.match(value):
        msg = "Password must contain at least one letter and one digit"
        raise ValueError(msg)
    return value


# Emails are compared in one form (`normalize_email`, applied before validation, so the
# validator sees what is stored): two spellings of one address are one account. Beyond the
# syntax, email-validator refuses domains that can never receive mail (no dot, or a
# special-use name such as `.test` or `.arpa`); the documented pattern says so too.
EMAIL_DOMAIN_PATTERN = (
    r"@(?!(?:[^@]*\.)?(?:"
    + "|".join(re.escape(name) for name in SPECIAL_USE_DOMAIN_NAMES)
    + r")$)[^@]+\.[^@]+$"
)
Email = Annotated[
    EmailStr,
    Field(max_length=320, json_schema_extra={"pattern": EMAIL_DOMAIN_PATTERN}),
    BeforeValidator(lambda value: normalize_email(value) if isinstance(value, str) else value),
]
# At least 8 characters with a letter and a digit; the upper bound keeps argon2 input sane.
Password = Annotated[
    str,
    Field(
        min_length=8,
        max_length=128,
        json_schema_extra={"format": "password", "pattern": LETTER_AND_DIGIT},
    ),
    AfterValidator(_letter_and_digit),
]
FullName = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_NUL)]


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

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"full_name": "Ada King"},
                {"password": "battery-staple-9", "current_password": "correct-horse-7"},
            ],
            "dependentRequired": {
                "email": ["current_password"],
                "password": ["current_password"],
            },
        },
    )

    nullable = frozenset({"full_name"})

    email: Email | None = None
    full_name: FullName | None = None
    password: Password | None = None
    current_password: Annotated[str, Field(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _current_password_for_credentials(self) -> Self:
        if (self.email is not None or self.password is not None) and not self.current_password:
            msg = "current_password is required to change the email or the password"
            raise ValueError(msg)
        return self


class AccountDeletion(BaseModel):
    """Deleting the account needs its password: a stolen access token alone cannot."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"current_password": "correct-horse-7"}]}
    )

    current_password: Annotated[str, Field(min_length=1, max_length=128)]


class UserAdminUpdate(PartialUpdate):
    model_config = example_config({"role": "admin"}, {"is_active": False})
    nullable = frozenset({"full_name"})

    email: Email | None = None
    full_name: FullName | None = None
    password: Password | None = None
    role: Role | None = None
    is_active: bool | None = None
