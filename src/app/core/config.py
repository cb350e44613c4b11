"""Settings, read from the environment and `.env`, in small groups.

Each group is its own `BaseSettings` with an env prefix, so the variable names stay the
ones operators expect (`DATABASE_URL`, `REDIS_URL`, `JWT_SECRET`...) while the code reads
`settings.database.url`. `.env.example` documents every variable.
"""

from __future__ import annotations

import platform
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, PositiveInt, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url

from app.core.sniff import SIGNATURES

JWT_SECRET_PLACEHOLDER = "change-me-in-production-this-is-not-a-secret"  # noqa: S105 - refused
# RFC 7518 §3.2: an HMAC key at least as long as the hash output.
MIN_JWT_SECRET_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class _Group(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)


# asyncpg's connect options that may be given in DATABASE_URL's query string, and their
# types (the URL carries text).
ASYNCPG_NUMERIC_OPTIONS: dict[str, type[int] | type[float]] = {
    "statement_cache_size": int,
    "max_cached_statement_lifetime": int,
    "max_cacheable_statement_size": int,
    "prepared_statement_cache_size": int,
    "timeout": float,
    "command_timeout": float,
}


class DatabaseSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="DATABASE_")

    url: str = "postgresql+asyncpg://postgres@127.0.0.1:5432/app"
    pool_size: PositiveInt = 10
    max_overflow: Annotated[int, Field(ge=0)] = 5
    # Seconds a request waits for a pooled connection before it answers 503.
    pool_timeout: Annotated[float, Field(gt=0)] = 5.0
    pool_recycle: PositiveInt = 1800
    pool_pre_ping: bool = False
    # Seconds to open a new connection (TCP, TLS, authentication).
    connect_timeout: Annotated[float, Field(gt=0)] = 2.0
    # Cap on any single statement of a request, in milliseconds (0: none). The server
    # cancels a statement that runs longer (a 503); the service itself waits for any
    # answer (a statement, a ping) half a second longer, then gives up on the
    # connection: a server that hangs costs a request that much, not forever. The
    # worker's jobs have their own cap (WORKER_STATEMENT_TIMEOUT_MS).
    statement_timeout_ms: Annotated[int, Field(ge=0)] = 2_000
    # After a connection failed or timed out, seconds during which requests that need
    # the database are answered 503 at once rather than each waiting (app.core.breaker).
    breaker_cooldown_seconds: Annotated[float, Field(gt=0)] = 0.5
    # Connect through a pooler in transaction mode (PgBouncer, RDS Proxy, Supavisor):
    # no startup parameters (the statement timeout is set per transaction instead), no
    # prepared statement kept across transactions (app.core.resources).
    pgbouncer: bool = False
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _asyncpg_only(cls, value: str) -> str:
        url = make_url(value)
        if url.drivername != "postgresql+asyncpg":
            msg = "DATABASE_URL must use the postgresql+asyncpg:// scheme"
            raise ValueError(msg)
        if not url.database:
            msg = "DATABASE_URL must name a database"
            raise ValueError(msg)
        for name, option_type in ASYNCPG_NUMERIC_OPTIONS.items():
            given = url.query.get(name)
            if given is None:
                continue
            try:
                option_type(given)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                msg = f"DATABASE_URL: {name} must be a number, not {given!r}"
                raise ValueError(msg) from None
        return value


class RedisSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="REDIS_")

    url: str = "redis://127.0.0.1:6379/0"
    # Connections per process; a command waits (up to socket_timeout) for a free one.
    # Every request makes at least one round trip: at 256 concurrent requests on one
    # process, 50 left some waiting past 2 s (503s in make bench), 150 none.
    max_connections: PositiveInt = 150
    socket_timeout: Annotated[float, Field(gt=0)] = 2.0

    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            msg = "REDIS_URL must start with redis://, rediss:// or unix://"
            raise ValueError(msg)
        return value


class AuthSettings(_Group):
    jwt_secret: SecretStr = SecretStr(JWT_SECRET_PLACEHOLDER)
    jwt_algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    jwt_issuer: str = "app"
    jwt_audience: str = "app-api"
    access_token_expire_minutes: PositiveInt = 15
    refresh_token_expire_days: PositiveInt = 7
    password_reset_expire_minutes: PositiveInt = 30
    # Argon2id; the defaults are OWASP's "m=19 MiB, t=2, p=1" profile.
    argon2_time_cost: PositiveInt = 2
    argon2_memory_kib: Annotated[int, Field(ge=8)] = 19_456
    argon2_parallelism: PositiveInt = 1
    # Hashes running at once per process; more requests wait their turn.
    argon2_max_threads: PositiveInt = 2
    # How much higher the hashing threads' nice value is than the event loop's (Linux;
    # 0: the same priority): a login storm then takes only the CPU that requests leave.
    argon2_thread_nice: Annotated[int, Field(ge=0, le=19)] = 10
    # Failed logins allowed per (account, client address) and per client address
    # within the window before /auth/token answers 429.
    login_max_failures: PositiveInt = 5
    login_max_failures_per_address: PositiveInt = 50
    login_failure_window_seconds: PositiveInt = 900
    # Seconds authentication may read an account (role, active, token version) from
    # Redis instead of PostgreSQL; every change through the service updates the entry at
    # once, so this only bounds changes made by hand in SQL (0: off).
    account_cache_seconds: Annotated[int, Field(ge=0)] = 60


class MailSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="MAIL_")

    # console writes messages to the log (development only); smtp sends them.
    backend: Literal["console", "smtp"] = "console"
    sender: str = "App <no-reply@example.com>"
    smtp_host: str = "127.0.0.1"
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    # none: plain SMTP (a local relay); starttls: upgrade on 587; tls: implicit TLS on 465.
    smtp_security: Literal["none", "starttls", "tls"] = "none"
    smtp_timeout: Annotated[float, Field(gt=0)] = 10.0
    # A temporary failure is retried after base, 2 x base, 4 x base... seconds.
    retry_backoff_seconds: Annotated[float, Field(gt=0)] = 30.0


class WorkerProcessSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="WORKER_")

    # This worker's name: its own health record, which `app worker --check` in the same
    # environment reads. The host name is unique per pod or container; give each worker
    # its own when several run on one host.
    name: Annotated[str, Field(min_length=1, max_length=200)] = Field(default_factory=platform.node)
    # Jobs one worker process runs at once.
    max_jobs: PositiveInt = 10
    # Seconds an idle worker waits before it looks at the queue again: the floor of the
    # enqueue-to-start latency (one small Redis query per poll).
    poll_delay_seconds: Annotated[float, Field(gt=0, le=5)] = 0.05
    # On SIGTERM, how long running jobs may take to finish before they are cancelled
    # (and retried by another worker).
    shutdown_grace_seconds: PositiveInt = 30
    # Cap on any single statement of a job, in milliseconds (0: none): jobs (imports,
    # exports, clean-ups) may run statements a request never should.
    statement_timeout_ms: Annotated[int, Field(ge=0)] = 60_000


class RealtimeSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="REALTIME_")

    # WebSocket and SSE connections one user may hold at once, across every process.
    max_connections_per_user: PositiveInt = 5
    # Events kept per user for resuming with Last-Event-ID, and for how long after the
    # last one; the bus every process tails keeps the newest bus_size.
    history_size: PositiveInt = 1000
    history_ttl_hours: PositiveInt = 168
    bus_size: Annotated[int, Field(ge=100)] = 10_000
    # Events waiting for one slow client before it is disconnected, and how long one
    # send may take.
    client_buffer: PositiveInt = 256
    send_timeout_seconds: Annotated[float, Field(gt=0)] = 10.0
    # Largest message a WebSocket client may send (they only send pings).
    max_message_bytes: Annotated[int, Field(ge=64)] = 4096
    # On shutdown, how long clients get to receive their "going away" before the server
    # moves on.
    drain_timeout_seconds: Annotated[float, Field(gt=0)] = 5.0
    # How often open connections' credentials are checked again (a deleted key, a
    # logout, a deactivated account end them within this).
    recheck_seconds: Annotated[float, Field(gt=0)] = 15.0


class FilesSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="FILES_")

    # Largest file accepted; an upload is cut off (413) the moment it passes this.
    max_file_bytes: PositiveInt = 50 * 1024 * 1024
    # Largest upload request (all its files together), refused before it is read.
    max_request_bytes: PositiveInt = 100 * 1024 * 1024
    max_files_per_request: PositiveInt = 10
    # Content types accepted; each must match the file's first bytes (application/
    # octet-stream, if allowed, matches anything).
    allowed_types: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "image/png",
            "image/jpeg",
            "image/gif",
            "image/webp",
            "application/pdf",
            "text/plain",
            "text/csv",
        ]
    )
    max_attachments_per_item: PositiveInt = 20

    @field_validator("allowed_types", mode="before")
    @classmethod
    def _split_types(cls, value: object) -> object:
        if isinstance(value, str):
            return [kind.strip().lower() for kind in value.split(",") if kind.strip()]
        return value

    @field_validator("allowed_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(SIGNATURES))
        if unknown:
            msg = (
                f"no content check is known for {', '.join(unknown)}; "
                f"FILES_ALLOWED_TYPES may list: {', '.join(sorted(SIGNATURES))}"
            )
            raise ValueError(msg)
        return value


class RateLimitSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="RATE_LIMIT_")

    enabled: bool = True
    # Requests per minute on /api/v1: per user (bearer token) or per API key, and per
    # client address for requests that carry neither.
    per_caller_per_minute: PositiveInt = 600
    anonymous_per_minute: PositiveInt = 120
    # Per client address, per hour.
    registrations_per_hour: PositiveInt = 10
    recoveries_per_hour: PositiveInt = 5


class ObservabilitySettings(_Group):
    # /metrics answers only with these HTTP Basic credentials; unset: /metrics is off.
    metrics_username: str | None = None
    metrics_password: SecretStr | None = None
    # FastAPI's built-in OpenTelemetry: traces and metrics sent over OTLP/HTTP to
    # OTEL_EXPORTER_OTLP_ENDPOINT (and the other standard OTEL_* variables).
    otel_enabled: bool = False

    @field_validator("metrics_username", "metrics_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def metrics_enabled(self) -> bool:
        return bool(self.metrics_username and self.metrics_password)


class Settings(_Group):
    environment: Environment = Environment.development
    project_name: str = "App API"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] | None = None
    # Where links in emails point (the password-reset page of your front end).
    public_base_url: str = "http://127.0.0.1:8000"
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Host headers accepted in production (TrustedHost); empty: the host of
    # PUBLIC_BASE_URL. The health probes are always answered.
    allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Strict-Transport-Security max-age; set it when the service is only reached over
    # HTTPS (0: no HSTS header).
    hsts_seconds: Annotated[int, Field(ge=0)] = 0
    # Responses at least this big are gzipped for clients that accept it.
    gzip_minimum_bytes: PositiveInt = 1000
    # /docs, /redoc and /openapi.json; default: on, except in production.
    docs_enabled: bool | None = None
    # Seconds GET /items/{id} may answer from Redis (kept right by every write; 0: off).
    item_cache_seconds: Annotated[int, Field(ge=0)] = 60
    max_body_bytes: PositiveInt = 1_048_576
    # Longest wait for the next part of a request body (an upload included) before the
    # request is answered 408: a client sending a byte every few seconds cannot hold a
    # connection and its worker forever. Headers are the proxy's to time out (docs).
    body_stall_timeout_seconds: Annotated[float, Field(gt=0)] = 30.0
    # Net allocations between two young garbage collections once the service has
    # started; what is alive after startup is frozen out of collection
    # (app.core.collector). 0: the interpreter's own settings (700, nothing frozen).
    gc_young_threshold: Annotated[int, Field(ge=0)] = 10_000
    # Files the service keeps (uploads, exports); shared by the API and the worker.
    storage_dir: Path = Path("var/storage")
    # Finished exports (file and status) are deleted after this many hours.
    export_retention_hours: PositiveInt = 24
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    web_concurrency: PositiveInt = 1
    # On SIGTERM, how long in-flight requests may take to finish before uvicorn closes
    # their connections (WebSocket and SSE clients are told to go within
    # REALTIME_DRAIN_TIMEOUT_SECONDS, well inside this).
    shutdown_grace_seconds: PositiveInt = 20
    # On SIGTERM, how long the process keeps serving while `/health/ready` answers 503,
    # before it stops accepting connections: the time a load balancer or Kubernetes
    # needs to stop sending it new requests (0: stop accepting at once).
    shutdown_drain_seconds: Annotated[float, Field(ge=0, le=300)] = 5.0
    # Proxies whose X-Forwarded-For/-Proto uvicorn believes (uvicorn's own default).
    forwarded_allow_ips: str = "127.0.0.1,::1"
    first_superuser_email: str | None = None
    first_superuser_password: SecretStr | None = None

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    mail: MailSettings = Field(default_factory=MailSettings)
    worker: WorkerProcessSettings = Field(default_factory=WorkerProcessSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    rate_limit: RateLimitSettings = Field(default_factory=RateLimitSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)

    @field_validator("first_superuser_email", "first_superuser_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @model_validator(mode="after")
    def _refuse_weak_secret(self) -> Self:
        if self.environment is Environment.development:
            return self
        secret = self.auth.jwt_secret.get_secret_value()
        minimum = MIN_JWT_SECRET_BYTES[self.auth.jwt_algorithm]
        if secret == JWT_SECRET_PLACEHOLDER or len(secret.encode()) < minimum:
            msg = (
                f"JWT_SECRET must be set to at least {minimum} random bytes "
                f"when ENVIRONMENT={self.environment.value} "
                '(python -c "import secrets; print(secrets.token_urlsafe(48))")'
            )
            raise ValueError(msg)
        return self

    @model_validator(mode="after")
    def _no_console_mail_in_production(self) -> Self:
        # The console backend logs the message, reset links included.
        if self.is_production and self.mail.backend == "console":
            msg = "MAIL_BACKEND=console is for development; configure MAIL_BACKEND=smtp"
            raise ValueError(msg)
        return self

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.production

    @property
    def docs_on(self) -> bool:
        return self.docs_enabled if self.docs_enabled is not None else not self.is_production

    @property
    def trusted_hosts(self) -> list[str]:
        if self.allowed_hosts:
            return self.allowed_hosts
        host = urlsplit(self.public_base_url).hostname
        return [host] if host else ["*"]

    @property
    def resolved_log_format(self) -> Literal["text", "json"]:
        if self.log_format is not None:
            return self.log_format
        return "json" if self.is_production else "text"


PROJECT_ROOT = Path(__file__).resolve().parents[3]
