from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from app.core.schemas import NO_NUL, example_config
from app.users.schemas import Email, FullName, Password

TokenString = Annotated[str, Field(min_length=1, max_length=4096)]
EXAMPLE_TOKEN = "eyJhbGciOiJIUzI1NiIsInR5cCI6InJ0K2p3dCJ9.eyJzdWIiOiIuLi4ifQ.c2lnbmF0dXJl"  # noqa: S105


class RegisterRequest(BaseModel):
    model_config = example_config(
        {"email": "ada@example.com", "password": "correct-horse-7", "full_name": "Ada Lovelace"}
    )

    email: Email
    password: Password
    full_name: FullName | None = None


class TokenForm(BaseModel):
    """The OAuth2 password grant (RFC 6749 §4.3), as a form: what Swagger UI's Authorize
    dialog and OAuth2 clients send. `scope` is accepted and ignored: an access token may
    do everything its user's role allows (scopes restrict API keys)."""

    model_config = example_config(
        {"grant_type": "password", "username": "ada@example.com", "password": "correct-horse-7"}
    )

    grant_type: Literal["password"] | None = None
    username: Annotated[
        str, Field(min_length=1, max_length=320, pattern=NO_NUL, description="Your email.")
    ]
    password: Annotated[
        str, Field(min_length=1, max_length=128, json_schema_extra={"format": "password"})
    ]
    scope: Annotated[str, Field(max_length=1000)] = ""
    client_id: Annotated[str, Field(max_length=200)] | None = None
    client_secret: Annotated[str, Field(max_length=200)] | None = None


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str | None = Field(
        description="Null when it was set as an HttpOnly cookie instead (`?cookie=true`)."
    )
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - not a secret
    expires_in: int = Field(description="Seconds until the access token expires.")


class RefreshRequest(BaseModel):
    model_config = example_config({"refresh_token": EXAMPLE_TOKEN})

    refresh_token: TokenString


class LogoutRequest(BaseModel):
    model_config = example_config({"refresh_token": EXAMPLE_TOKEN})

    refresh_token: TokenString


class PasswordRecoveryRequest(BaseModel):
    model_config = example_config({"email": "ada@example.com"})

    email: Email


class PasswordResetRequest(BaseModel):
    model_config = example_config(
        {"token": "the token from the reset email", "new_password": "battery-staple-9"}
    )

    token: Annotated[str, Field(min_length=1, max_length=256)]
    new_password: Password


class Accepted(BaseModel):
    detail: str
