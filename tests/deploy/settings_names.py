"""What the deployment files may name: environment variables the service reads, and
`app` commands. Both are derived from the code, so renaming a setting or a command
breaks the deploy tests instead of silently leaving a manifest behind."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Iterable, Sequence
from functools import cache

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings

from app.cli import _parser
from app.core.config import Settings

# Read by the environment of the process rather than by Settings; the only others a
# deployment file may set.
OTHER_ENV_NAMES = {
    "PYTHONUNBUFFERED": "the interpreter: logs leave the process at once",
    "PYTHONDONTWRITEBYTECODE": "the interpreter (the image sets it)",
    "ALEMBIC_CONFIG": "`app migrate` (app.cli) finds alembic.ini through it",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "the OpenTelemetry SDK behind OTEL_ENABLED",
    "OTEL_SERVICE_NAME": "the OpenTelemetry SDK behind OTEL_ENABLED",
}


def _env_fields(model: type[BaseSettings]) -> dict[str, FieldInfo]:
    """`model`'s variables (its prefix and field name or alias, upper-cased) and their
    fields, with the variables of each nested group under the group's own prefix."""
    prefix = str(model.model_config.get("env_prefix", ""))
    fields: dict[str, FieldInfo] = {}
    for name, field in model.model_fields.items():
        group = field.annotation
        if isinstance(group, type) and issubclass(group, BaseSettings):
            fields |= _env_fields(group)
        else:
            fields[f"{prefix}{field.alias or name}".upper()] = field
    return fields


@cache
def setting_fields() -> dict[str, FieldInfo]:
    """Every environment variable Settings reads (DATABASE_URL, SHUTDOWN_DRAIN_SECONDS...)."""
    return _env_fields(Settings)


def setting_env_names() -> frozenset[str]:
    return frozenset(setting_fields())


def setting_default(name: str) -> object:
    """What the service uses when the variable `name` is not set."""
    return setting_fields()[name].get_default(call_default_factory=True)


def known_env_names() -> frozenset[str]:
    return setting_env_names() | OTHER_ENV_NAMES.keys()


def unknown_env_names(names: Iterable[str]) -> list[str]:
    """The names among `names` that nothing in the service reads."""
    known = known_env_names()
    return sorted({name for name in names if name not in known})


def parse_cli(command: Sequence[str]) -> argparse.Namespace:
    """`command` (["app", "worker", "--check"]) as the `app` CLI parses it; AssertionError
    if it is not an `app` command or its arguments are refused."""
    assert list(command[:1]) == ["app"], f"not an `app` command: {command}"
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            parsed: argparse.Namespace = _parser().parse_args(list(command[1:]))
    except SystemExit:
        raise AssertionError(f"`{' '.join(command)}`: {errors.getvalue().strip()}") from None
    return parsed
