"""Password-reset tokens are random and belong to the job that mailed them.

A token row records the id of the mail job that created it, so a job that runs again
replaces its own token instead of adding a second one; the token itself is random and
only its SHA-256 is stored. Tokens issued before this revision are spent.

Revision ID: 5a1e0c2d9b7f
Revises: 833430194888
Create Date: 2026-12-04 17:45:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5a1e0c2d9b7f"
down_revision: str | Sequence[str] | None = "833430194888"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("password_reset_tokens", sa.Column("job_id", sa.String(length=120)))
    op.create_unique_constraint(
        op.f("uq_password_reset_tokens_job_id"), "password_reset_tokens", ["job_id"]
    )
    # Tokens issued before were derived from the email and the minute: none may work.
    op.execute("UPDATE password_reset_tokens SET used_at = now() WHERE used_at IS NULL")


def downgrade() -> None:
    op.drop_constraint(
        op.f("uq_password_reset_tokens_job_id"), "password_reset_tokens", type_="unique"
    )
    op.drop_column("password_reset_tokens", "job_id")
