"""compose.yaml: valid against the Compose Specification's JSON schema, and able to run
`docker compose up --scale api=N`: no host port on the API (only the load balancer
publishes one), nginx proxying to api:8000, env names that are settings, commands that
are `app` commands, stop grace periods that cover the shutdown.

compose-spec.json is the Compose Specification's schema, vendored unchanged from
github.com/compose-spec/compose-spec (schema/compose-spec.json, commit a08f8d5; Apache
License 2.0), so the test needs no network and no Docker engine."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.deploy.settings_names import parse_cli, setting_default, unknown_env_names

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose-spec.json")
# The services built from the app's image (the x-app block).
APP_SERVICES = ("migrate", "api", "worker")
LOAD_BALANCER = "lb"
MARGIN_SECONDS = 5

Doc = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Doc:
    # PyYAML's safe loader resolves the `<<` merge keys as Compose does.
    loaded: Doc = yaml.safe_load(COMPOSE.read_text())
    return loaded


def _services(compose: Doc) -> dict[str, Doc]:
    services: dict[str, Doc] = compose["services"]
    return services


def _seconds(duration: str) -> float:
    """A Compose duration ("1m30s", "40s") in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    assert "".join(number + unit for number, unit in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


def _env(service: Doc) -> dict[str, str]:
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment as a mapping"
    return {name: str(value) for name, value in environment.items()}


def _setting(service: Doc, name: str) -> float:
    # ${VAR:-default} interpolations are not used for these: the value is literal.
    value = _env(service).get(name, setting_default(name))
    assert isinstance(value, str | int | float), name
    return float(value)


def test_compose_file_matches_the_compose_specification(compose: Doc) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(compose)


def test_schema_refuses_a_misspelt_key(compose: Doc) -> None:
    """The validation above means something: an unknown service key fails."""
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["api"]["port"] = ["8000:8000"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(broken)


def test_existing_services_are_kept(compose: Doc) -> None:
    assert {"db", "redis", *APP_SERVICES, LOAD_BALANCER} <= _services(compose).keys()


def test_api_replicas_publish_no_host_port(compose: Doc) -> None:
    services = _services(compose)
    for name in APP_SERVICES:
        assert "ports" not in services[name], name
        assert "container_name" not in services[name], f"{name} could not be scaled"
    published = [
        (name, port)
        for name, service in services.items()
        for port in service.get("ports", [])
        if str(port).endswith(":8000")
    ]
    assert published == [(LOAD_BALANCER, "127.0.0.1:${API_PORT:-8000}:8000")]


def _nginx_config(compose: Doc) -> str:
    (mount,) = _services(compose)[LOAD_BALANCER]["volumes"]
    source, target, mode = str(mount).split(":")
    assert target == "/etc/nginx/conf.d/default.conf"
    assert mode == "ro"
    return (ROOT / str(source)).read_text()


def test_load_balancer_proxies_to_every_api_replica(compose: Doc) -> None:
    lb = _services(compose)[LOAD_BALANCER]
    assert lb["image"].startswith("nginx:")
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    config = re.sub(r"#.*", "", _nginx_config(compose))
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", config))
    # `resolve` (with a shared zone and a resolver) follows the replicas as they scale.
    servers = re.findall(r"^\s*server\s+(\S+)([^;]*);", upstreams["api"], re.MULTILINE)
    assert [(address, "resolve" in options.split()) for address, options in servers] == [
        ("api:8000", True)
    ]
    assert re.search(r"^\s*zone\s+api\s", upstreams["api"], re.MULTILINE)
    assert re.search(r"^resolver\s+127\.0\.0\.11\b", config, re.MULTILINE)
    assert set(re.findall(r"proxy_pass\s+([^;]+);", config)) == {"http://api"}
    assert re.search(r"^\s*listen\s+8000;", config, re.MULTILINE)


def test_env_names_are_settings(compose: Doc) -> None:
    for name in APP_SERVICES:
        assert unknown_env_names(_env(_services(compose)[name])) == [], name


def _commands(service: Doc) -> list[list[str]]:
    command = service["command"]
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in command[2].split("&&")]
    return [command]


def test_every_command_is_an_app_command(compose: Doc) -> None:
    services = _services(compose)
    ran = {
        name: [parse_cli(command).command for command in _commands(services[name])]
        for name in APP_SERVICES
    }
    assert ran == {
        "migrate": ["migrate", "create-superuser"],
        "api": ["serve"],
        "worker": ["worker"],
    }
    check = parse_cli(services["worker"]["healthcheck"]["test"][1:])
    assert (check.command, check.check) == ("worker", True)


def test_stop_grace_periods_cover_the_shutdown(compose: Doc) -> None:
    services = _services(compose)
    api = services["api"]
    api_needs = (
        _setting(api, "SHUTDOWN_DRAIN_SECONDS")
        + _setting(api, "REALTIME_DRAIN_TIMEOUT_SECONDS")
        + _setting(api, "SHUTDOWN_GRACE_SECONDS")
        + MARGIN_SECONDS
    )
    assert _seconds(api["stop_grace_period"]) >= api_needs
    worker = services["worker"]
    worker_needs = _setting(worker, "WORKER_SHUTDOWN_GRACE_SECONDS") + MARGIN_SECONDS
    assert _seconds(worker["stop_grace_period"]) >= worker_needs


def test_api_and_worker_share_the_storage_volume(compose: Doc) -> None:
    services = _services(compose)
    for name in ("api", "worker"):
        storage = _env(services[name])["STORAGE_DIR"]
        assert f"storage:{storage}" in services[name]["volumes"], name
