"""Who a request acts as, as the services see it."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from app.auth.scopes import Scope
from app.models import Role


@dataclass(frozen=True, slots=True)
class Actor:
    """The account a request acts for, and what its credential may do: an access token
    carries every scope, an API key only the scopes it was given."""

    id: UUID
    role: Role
    scopes: frozenset[str]

    @property
    def sees_everything(self) -> bool:
        """Admins reach every user's objects; an admin's API key only with `admin`."""
        return self.role == Role.admin and Scope.admin in self.scopes
