from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx

from app.core.config import Settings
from tests.factories import Account

FILES = "/api/v1/files"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + b"0123456789" * 100

FilePart = tuple[str, bytes, str]


async def upload(
    client: httpx.AsyncClient,
    account: Account,
    files: Iterable[FilePart],
    *,
    description: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.post(
        FILES,
        files=[("files", part) for part in files],
        data={"description": description} if description is not None else None,
        headers=account.headers | (headers or {}),
    )


async def upload_one(client: httpx.AsyncClient, account: Account, part: FilePart) -> dict[str, Any]:
    response = await upload(client, account, [part])
    assert response.status_code == 201, response.text
    [stored] = response.json()
    assert isinstance(stored, dict)
    return stored


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_paths(settings: Settings) -> set[Path]:
    """Every file under the storage's `files/` directory, temporary ones included."""
    root = settings.storage_dir / "files"
    return {path for path in root.rglob("*") if path.is_file()} if root.exists() else set()


RawPart = tuple[str, str | None, str | None, bytes]  # name, filename, content type, body


def multipart(parts: Iterable[RawPart], boundary: str = "test-boundary") -> tuple[bytes, str]:
    """A `multipart/form-data` body built by hand (httpx cannot send every odd shape)."""
    body = bytearray()
    for name, filename, content_type, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            quoted = filename.replace("\\", "\\\\").replace('"', '\\"')
            disposition += f'; filename="{quoted}"'
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if content_type is not None:
            body += f"Content-Type: {content_type}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return bytes(body), f"multipart/form-data; boundary={boundary}"
