"""Data the CLI puts in place: the first superuser and demo data."""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal

from pydantic import SecretStr
from sqlalchemy import insert
from sqlalchemy.dialects.postgresql import insert as pg_insert

from app.core.config import Settings
from app.core.ids import uuid7
from app.core.resources import Resources
from app.items import repository as item_repository
from app.models import Item, ItemStatus, Role, User, item_tags
from app.users import repository as user_repository

DEMO_PASSWORD = "demo-password-1"  # noqa: S105 - documented demo credentials
DEMO_TAGS = ["books", "garden", "kitchen", "music", "outdoor", "sale", "tools", "toys"]
DEMO_WORDS = [
    "red",
    "blue",
    "small",
    "large",
    "vintage",
    "handmade",
    "electric",
    "wooden",
    "steel",
    "classic",
]
DEMO_NOUNS = [
    "lamp",
    "chair",
    "guitar",
    "kettle",
    "bicycle",
    "tent",
    "hammer",
    "puzzle",
    "novel",
    "drill",
]
SEED_BATCH_USERS = 50


async def ensure_superuser(
    settings: Settings, *, email: str, password: SecretStr, promote: bool = False
) -> str:
    """Create the admin `email`. An existing account is left alone unless `promote` says
    so: whoever registered that address first must not become admin by a redeploy."""
    async with (
        Resources.open(settings) as resources,
        resources.session() as session,
    ):
        user = await user_repository.get_by_email(session, email)
        if user is not None:
            if user.role == Role.admin:
                return "already exists"
            if not promote:
                return "exists but is not an admin; left unchanged (use --promote)"
            user.role = Role.admin
            return "promoted to admin"
        hashed = await resources.passwords.hash(password.get_secret_value())
        await user_repository.insert_new(
            session, email=email, hashed_password=hashed, role=Role.admin
        )
        return "created"


async def seed_demo_data(
    settings: Settings,
    *,
    users: int,
    items_per_user: int,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Add `users` demo accounts (demo-<n>@example.com) with items; returns how many were new."""
    rng = random.Random(users)  # noqa: S311 - demo data, not secrets
    created = 0
    async with Resources.open(settings) as resources:
        hashed = await resources.passwords.hash(DEMO_PASSWORD)
        async with resources.session() as session:
            tags = await item_repository.tags_named(session, DEMO_TAGS)
        for start in range(0, users, SEED_BATCH_USERS):
            batch = range(start, min(start + SEED_BATCH_USERS, users))
            async with resources.session() as session:
                rows = [
                    {"id": uuid7(), "email": f"demo-{n}@example.com", "hashed_password": hashed}
                    for n in batch
                ]
                statement = pg_insert(User).on_conflict_do_nothing().returning(User.id)
                new_ids = list(await session.scalars(statement, rows))
                created += len(new_ids)
                items = [_demo_item(rng, owner) for owner in new_ids for _ in range(items_per_user)]
                if items:
                    await session.execute(insert(Item), items)
                    links = [
                        {"item_id": item["id"], "tag_id": tag.id}
                        for item in items
                        for tag in rng.sample(tags, k=rng.randint(0, 3))
                    ]
                    if links:
                        await session.execute(insert(item_tags), links)
            if progress:
                progress(batch.stop, users)
    return created


def _demo_item(rng: random.Random, owner_id: object) -> dict[str, object]:
    title = f"{rng.choice(DEMO_WORDS).title()} {rng.choice(DEMO_NOUNS)}"
    return {
        "id": uuid7(),
        "owner_id": owner_id,
        "title": title,
        "description": f"A {title.lower()} in good condition.",
        "price": Decimal(rng.randint(100, 50_000)) / 100,
        "status": rng.choice(list(ItemStatus)),
    }
