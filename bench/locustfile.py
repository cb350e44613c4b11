"""A realistic load for locust (`make load`, or `locust -f bench/locustfile.py`).

Each simulated user gets an account of its own (registered on first use, logged into
afterwards), then, with think time between requests: browses pages of its items with
filters and sometimes follows the cursor, reads items with `If-None-Match` (a 304 is
a success), creates items with an `Idempotency-Key`, updates them with `If-Match`,
deletes some, and now and then exports its items as CSV through the worker. An access
token that expires is refreshed with the refresh token, as a client would.

Requests are named by route template, so locust's table has one row per endpoint.
The API's rate limits must be off (or raised) for a load from one address.
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from typing import Any
from urllib.parse import urlsplit

from locust import FastHttpUser, between, task
from locust.contrib.fasthttp import ResponseContextManager

PASSWORD = "load-test-password-1"  # noqa: S105 - the load test's own accounts
_RUN = os.environ.get("LOAD_RUN_ID", uuid.uuid4().hex[:8])  # fresh accounts per run
_numbers = itertools.count()
STATUSES = ["draft", "active", "archived"]
TAGS = ["books", "garden", "kitchen", "music", "outdoor", "sale", "tools", "toys"]
WORDS = ["red", "blue", "lamp", "chair", "guitar", "kettle", "tent", "novel"]


class ApiUser(FastHttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        self.email = f"load-{_RUN}-{os.getpid()}-{next(_numbers)}@example.com"
        self.items: dict[str, str] = {}  # id -> ETag
        self.access = ""
        self.refresh = ""
        registered = self.client.post(
            "/api/v1/auth/register",
            json={"email": self.email, "password": PASSWORD},
            name="POST /auth/register",
        )
        if registered.status_code not in (201, 409):
            registered.raise_for_status()
        self._log_in()

    def _log_in(self) -> None:
        response = self.client.post(
            "/api/v1/auth/token",
            data={"username": self.email, "password": PASSWORD},
            name="POST /auth/token",
        )
        response.raise_for_status()
        self._keep(response.json())

    def _keep(self, tokens: dict[str, Any]) -> None:
        self.access, self.refresh = tokens["access_token"], tokens["refresh_token"]

    def _headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}", **extra}

    def _renew(self) -> None:
        response = self.client.post(
            "/api/v1/auth/refresh", json={"refresh_token": self.refresh}, name="POST /auth/refresh"
        )
        if response.status_code == 200:
            self._keep(response.json())
        else:
            self._log_in()

    def _call(
        self, method: str, path: str, name: str, ok: tuple[int, ...], **kwargs: Any
    ) -> ResponseContextManager:
        """One request; `ok` lists the statuses that count as success. A 401 (expired
        access token) is renewed once and retried."""
        extra: dict[str, str] = kwargs.pop("headers", {})
        for attempt in (1, 2):
            with self.client.request(
                method,
                path,
                name=name,
                headers=self._headers(**extra),
                catch_response=True,
                **kwargs,
            ) as response:
                if response.status_code == 401 and attempt == 1:
                    response.success()  # not a failure of the API: the token expired
                    self._renew()
                    continue
                if response.status_code in ok:
                    response.success()
                else:
                    response.failure(f"{response.status_code}: {response.text[:200]}")
                return response
        raise AssertionError("unreachable")

    @task(8)
    def browse(self) -> None:
        params: dict[str, Any] = {"limit": 20}
        choice = random.random()  # noqa: S311 - a load mix, not a secret
        if choice < 0.3:
            params["status"] = random.choice(STATUSES)  # noqa: S311
        elif choice < 0.5:
            params["tag"] = random.choice(TAGS)  # noqa: S311
        elif choice < 0.6:
            params["q"] = random.choice(WORDS)  # noqa: S311
        elif choice < 0.7:
            params["min_price"], params["max_price"] = "5", "500"
        page = self._call("GET", "/api/v1/items", "GET /items", (200,), params=params)
        if page.status_code != 200:
            return
        body = page.json()
        for item in body["items"]:
            self.items.setdefault(item["id"], f'"{item["version"]}"')
        cursor = body.get("next_cursor")
        if cursor and random.random() < 0.3:  # noqa: S311
            self._call(
                "GET", "/api/v1/items", "GET /items", (200,), params={**params, "cursor": cursor}
            )

    @task(10)
    def read(self) -> None:
        if not self.items:
            return
        item_id = random.choice(list(self.items))  # noqa: S311
        response = self._call(
            "GET",
            f"/api/v1/items/{item_id}",
            "GET /items/{id}",
            (200, 304, 404),
            headers={"If-None-Match": self.items[item_id]},
        )
        if response.status_code == 200:
            self.items[item_id] = response.headers["ETag"]
        elif response.status_code == 404:
            self.items.pop(item_id, None)

    @task(3)
    def create(self) -> None:
        body = {
            "title": f"{random.choice(WORDS).title()} {random.choice(WORDS)}",  # noqa: S311
            "price": f"{random.randint(1, 900)}.{random.randint(0, 99):02d}",  # noqa: S311
            "status": random.choice(STATUSES),  # noqa: S311
            "tags": random.sample(TAGS, k=random.randint(0, 3)),  # noqa: S311
        }
        response = self._call(
            "POST",
            "/api/v1/items",
            "POST /items",
            (201,),
            json=body,
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if response.status_code == 201:
            self.items[response.json()["id"]] = response.headers["ETag"]

    @task(2)
    def update(self) -> None:
        if not self.items:
            return
        item_id = random.choice(list(self.items))  # noqa: S311
        response = self._call(
            "PATCH",
            f"/api/v1/items/{item_id}",
            "PATCH /items/{id}",
            (200,),
            json={"price": f"{random.randint(1, 900)}.00"},  # noqa: S311
            headers={"If-Match": self.items[item_id]},
        )
        if response.status_code == 200:
            self.items[item_id] = response.headers["ETag"]

    @task(1)
    def delete(self) -> None:
        if len(self.items) < 5:
            return
        item_id = random.choice(list(self.items))  # noqa: S311
        self._call(
            "DELETE",
            f"/api/v1/items/{item_id}",
            "DELETE /items/{id}",
            (204,),
            headers={"If-Match": self.items.pop(item_id)},
        )

    @task(1)
    def export(self) -> None:
        if random.random() > 0.2:  # noqa: S311 - one export per ~5 of these turns
            return
        started = self._call(
            "POST",
            "/api/v1/items/exports",
            "POST /items/exports",
            (202,),
            headers={"Idempotency-Key": str(uuid.uuid4())},
        )
        if started.status_code == 202:
            status_path = urlsplit(started.json()["status_url"]).path
            self._call("GET", status_path, "GET /jobs/{id}", (200,))
