from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings

from app.core.config import (
    JWT_SECRET_PLACEHOLDER,
    PROJECT_ROOT,
    AuthSettings,
    DatabaseSettings,
    Environment,
    MailSettings,
    RedisSettings,
    Settings,
)

STRONG_SECRET = SecretStr("k" * 48)


def _settings(environment: Environment, secret: str, **auth: object) -> Settings:
    return Settings(
        _env_file=None,
        environment=environment,
        auth=AuthSettings(_env_file=None, jwt_secret=SecretStr(secret), **auth),  # type: ignore[arg-type]
        mail=MailSettings(_env_file=None, backend="smtp"),
    )


@pytest.mark.parametrize("environment", [Environment.production, Environment.test])
def test_the_placeholder_secret_is_refused_outside_development(environment: Environment) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET must be set"):
        _settings(environment, JWT_SECRET_PLACEHOLDER)


def test_a_short_secret_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        _settings(Environment.production, "x" * 31)


def test_the_secret_must_match_the_hash_size() -> None:
    with pytest.raises(ValidationError, match="at least 64"):
        _settings(Environment.production, "x" * 48, jwt_algorithm="HS512")


def test_the_console_mail_backend_is_refused_in_production() -> None:
    with pytest.raises(ValidationError, match="MAIL_BACKEND=console is for development"):
        Settings(
            _env_file=None,
            environment=Environment.production,
            auth=AuthSettings(_env_file=None, jwt_secret=STRONG_SECRET),
            mail=MailSettings(_env_file=None, backend="console"),
        )


def test_development_accepts_the_placeholder() -> None:
    settings = _settings(Environment.development, JWT_SECRET_PLACEHOLDER)
    assert settings.auth.jwt_secret.get_secret_value() == JWT_SECRET_PLACEHOLDER


def test_production_defaults() -> None:
    settings = _settings(Environment.production, "x" * 32)
    assert settings.is_production
    assert settings.resolved_log_format == "json"
    # OWASP Password Storage Cheat Sheet: argon2id, m=19 MiB, t=2, p=1.
    assert (settings.auth.argon2_memory_kib, settings.auth.argon2_time_cost) == (19_456, 2)
    assert settings.auth.argon2_parallelism == 1
    assert settings.auth.access_token_expire_minutes == 15


def test_secrets_never_show_in_repr() -> None:
    settings = _settings(Environment.production, "super-secret-value-" * 3)
    assert "super-secret-value" not in repr(settings)


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@db.internal:6432/shop")
    monkeypatch.setenv("DATABASE_POOL_SIZE", "7")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/3")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("ACCESS_TOKEN_EXPIRE_MINUTES", "5")
    settings = Settings(_env_file=None)
    assert settings.database.url.endswith("@db.internal:6432/shop")
    assert settings.database.pool_size == 7
    assert settings.redis.url == "redis://cache:6379/3"
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.auth.access_token_expire_minutes == 5


@pytest.mark.parametrize(
    "url", ["postgresql://u@h/db", "postgresql+psycopg://u@h/db", "postgresql+asyncpg://u@h"]
)
def test_database_url_must_be_asyncpg_with_a_database(url: str) -> None:
    with pytest.raises(ValidationError):
        DatabaseSettings(_env_file=None, url=url)


def test_redis_url_scheme_is_checked() -> None:
    with pytest.raises(ValidationError):
        RedisSettings(_env_file=None, url="http://localhost:6379")


def _documented_variables() -> set[str]:
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    return {
        line.lstrip("# ").split("=", 1)[0]
        for line in lines
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }


def _setting_variables() -> set[str]:
    groups: dict[str, type[BaseSettings]] = {
        name: field.annotation
        for name, field in Settings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)
    }
    assert {"database", "redis", "auth", "mail", "worker", "realtime"} <= set(groups)
    names = {name.upper() for name in Settings.model_fields if name not in groups}
    for group in groups.values():
        prefix = group.model_config.get("env_prefix", "")
        names |= {f"{prefix}{name}".upper() for name in group.model_fields}
    return names


def test_env_example_documents_every_setting() -> None:
    assert _setting_variables() == _documented_variables()


def test_empty_superuser_variables_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRST_SUPERUSER_EMAIL", "")
    monkeypatch.setenv("FIRST_SUPERUSER_PASSWORD", "")
    settings = Settings(_env_file=None)
    assert settings.first_superuser_email is None
    assert settings.first_superuser_password is None


def test_readme_documents_every_setting() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    missing = {name for name in _setting_variables() if f"`{name}`" not in readme}
    assert not missing
