"""Refresh tokens live in PostgreSQL, access-token revocations in Redis.

Why PostgreSQL here: a refresh token lives for days, and reuse detection needs the whole
family (every token rotated from one login) to be found and revoked atomically with the
rotation. Losing this state to a Redis restart or failover would either log everyone out
or, worse, forget which tokens were already used and so disable reuse detection. The
write rate is one row per login or refresh, which PostgreSQL handles without effort.

Why Redis for logout of access tokens (see auth.service): the check runs on every
authenticated request, the entry only needs to outlive the token (at most
ACCESS_TOKEN_EXPIRE_MINUTES, so a TTL cleans it up), and losing it would at worst
re-admit a logged-out access token until it expires on its own.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from sqlalchemy import ForeignKey, func
from sqlalchemy.orm import Mapped, mapped_column

from app.core.db import Base, utcnow


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"

    # The token's `jti`. The token itself is a signed JWT and is never stored.
    id: Mapped[UUID] = mapped_column(primary_key=True)
    user_id: Mapped[UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    # Every token rotated from one login shares the family of the first.
    family_id: Mapped[UUID] = mapped_column(index=True)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow, server_default=func.now())
    # Set when the token is exchanged for a new pair; presenting it again is reuse.
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
