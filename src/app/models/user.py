from __future__ import annotations

from enum import StrEnum

from sqlalchemy import Enum, String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, Timestamps, UUIDPrimaryKey


class Role(StrEnum):
    user = "user"
    admin = "admin"


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"

    # Stored lower-cased (see users.schemas.normalize_email), so this is case-insensitive.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(255))
    role: Mapped[Role] = mapped_column(
        Enum(Role, name="role", native_enum=False, create_constraint=True, length=16),
        default=Role.user,
        server_default=Role.user.value,
    )
    is_active: Mapped[bool] = mapped_column(default=True, server_default=true())
    # Carried in every access token as `ver`; bumping it (password change, reset)
    # invalidates every access token issued before.
    token_version: Mapped[int] = mapped_column(default=0, server_default="0")
