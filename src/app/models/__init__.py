"""Every table, one module each; importing this package registers them all on `Base`."""

from app.models.api_key import ApiKey
from app.models.item import Item, ItemStatus
from app.models.item_attachment import item_attachments
from app.models.job import Job, JobStatus
from app.models.job_outbox import JobOutbox
from app.models.password_reset_token import PasswordResetToken
from app.models.refresh_token import RefreshToken
from app.models.stored_file import StoredFile
from app.models.tag import Tag, item_tags
from app.models.user import Role, User

__all__ = [
    "ApiKey",
    "Item",
    "ItemStatus",
    "Job",
    "JobOutbox",
    "JobStatus",
    "PasswordResetToken",
    "RefreshToken",
    "Role",
    "StoredFile",
    "Tag",
    "User",
    "item_attachments",
    "item_tags",
]
