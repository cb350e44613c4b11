from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from fastapi import APIRouter, status

from app.api_keys import service as api_key_service
from app.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from app.auth.dependencies import TokenUser
from app.core.dependencies import SessionDep
from app.core.errors import problem_responses
from app.core.http import NO_STORE
from app.models import ApiKey

# Managing keys takes a bearer token: no API key can mint or revoke keys.
router = APIRouter(
    prefix="/users/me/api-keys",
    tags=["api-keys"],
    dependencies=[NO_STORE],
    responses=problem_responses(401, 403),
)


@router.post("", status_code=status.HTTP_201_CREATED, responses=problem_responses(409))
async def create_api_key(body: ApiKeyCreate, user: TokenUser, session: SessionDep) -> ApiKeyCreated:
    """Create a key for a machine client. The answer holds the key itself, shown this
    once; only a hash is kept. Send it as `X-API-Key`; it may do what its scopes say."""
    api_key, key = await api_key_service.create(session, user, data=body)
    return ApiKeyCreated(**ApiKeyRead.model_validate(api_key).model_dump(), key=key)


@router.get("", response_model=list[ApiKeyRead])
async def list_api_keys(user: TokenUser, session: SessionDep) -> Sequence[ApiKey]:
    """Your keys: prefix, name, scopes, expiry and last use; never the keys themselves."""
    return await api_key_service.list_for(session, user)


@router.delete(
    "/{key_id:uuid}", status_code=status.HTTP_204_NO_CONTENT, responses=problem_responses(404)
)
async def delete_api_key(key_id: UUID, user: TokenUser, session: SessionDep) -> None:
    """Revoke a key: it stops working at once."""
    await api_key_service.delete(session, user, key_id)
