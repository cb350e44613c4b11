"""What a credential may do.

An access token (a person who logged in) may do everything their role allows. An API
key (a machine) may only do what its scopes name; routes declare theirs with FastAPI's
`Security(..., scopes=[...])`, which also shows them in OpenAPI. No scope lets a key
manage the account or other keys: those routes take access tokens only.
"""

from __future__ import annotations

from enum import StrEnum


class Scope(StrEnum):
    items_read = "items:read"
    items_write = "items:write"
    files_read = "files:read"
    files_write = "files:write"
    jobs_read = "jobs:read"
    events_read = "events:read"
    account_read = "account:read"
    admin = "admin"


DESCRIPTIONS = {
    Scope.items_read: "List, read and export items.",
    Scope.items_write: "Create, change, delete items and their attachments.",
    Scope.files_read: "List files and download them.",
    Scope.files_write: "Upload and delete files.",
    Scope.jobs_read: "Follow jobs and download what they produced.",
    Scope.events_read: "Receive realtime events (SSE, WebSocket).",
    Scope.account_read: "Read the account the key belongs to.",
    Scope.admin: "Administer accounts and every item (admins' keys only).",
}

EVERY_SCOPE = frozenset(Scope)
