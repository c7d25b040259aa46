"""API keys: /v1/keys (an admin key of every collection only; see app.auth)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from app.deps import KeyStoreDep, SettingsDep
from app.schemas.keys import KeyCreate, KeyCreated, KeyList
from app.services import keys as svc

router = APIRouter(prefix="/v1/keys", tags=["keys"])


@router.post(
    "",
    status_code=201,
    response_model=KeyCreated,
    responses={
        409: {
            "description": "auth is off (MMR_API_KEYS is empty): a key would not count",
            "x-example": {
                "code": "conflict",
                "message": "API keys are off (MMR_API_KEYS is empty)",
            },
        }
    },
)
async def create_key(body: KeyCreate, settings: SettingsDep, keys: KeyStoreDep) -> KeyCreated:
    """Make a key with a scope, optionally limited to collections; the answer's `key` is
    shown once (only its hash is stored). 409 while `MMR_API_KEYS` is empty (auth off)."""
    return await run_in_threadpool(svc.create_key, settings=settings, keys=keys, body=body)


@router.get("", response_model=KeyList)
async def list_keys(keys: KeyStoreDep) -> KeyList:
    """Every key made here, oldest first, without secrets (MMR_API_KEYS are not listed)."""
    return KeyList(keys=await run_in_threadpool(svc.list_keys, keys=keys))


@router.delete("/{key_id}", status_code=204, response_class=Response)
async def delete_key(key_id: str, keys: KeyStoreDep) -> Response:
    """Revoke a key: from the next request on, on every process, it gets 401."""
    await run_in_threadpool(svc.delete_key, keys=keys, key_id=key_id)
    return Response(status_code=204)
