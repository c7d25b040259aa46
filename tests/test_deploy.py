"""Deployment files agree with the code: compose, Dockerfile, README quick start, CI entry.

No container engine runs here, so these tests read the files and check each claim they make
against the real app: routes, settings fields, the console script and its arguments.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import cli
from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SERVE_ARGS = ["serve", "--host", "0.0.0.0", "--port", "8000"]
MMR_VAR = re.compile(r"\bMMR_[A-Z0-9_]+\b")


def read(name: str) -> str:
    """A file of the repository root."""
    return (ROOT / name).read_text(encoding="utf-8")


def compose() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    parsed: dict[str, Any] = yaml.safe_load(read("docker-compose.yml"))
    return parsed


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in read("Dockerfile").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    pairs = []
    for entry in logical:
        keyword, _, rest = entry.partition(" ")
        pairs.append((keyword.upper(), rest.strip()))
    return pairs


def dockerfile(keyword: str) -> list[str]:
    """The arguments of every instruction with this keyword."""
    return [rest for kw, rest in dockerfile_instructions() if kw == keyword]


def command_words(value: str | list[str]) -> list[str]:
    """An exec-form (JSON list) or shell-form command as words."""
    if isinstance(value, list):
        return value
    if value.startswith("["):
        words: list[str] = json.loads(value)
        return words
    return shlex.split(value)


def settings_env_names() -> set[str]:
    """The MMR_* variable of every Settings field."""
    return {f"MMR_{name.upper()}" for name in Settings.model_fields}


def unstarted_app(tmp_path: Path) -> FastAPI:
    """The real app, built for SQLite in tmp_path; its lifespan (model, database) not started."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'mmr.sqlite3'}",
        model="random:mmr-tiny",
        device="cpu",
        _env_file=None,
    )
    return create_app(settings)


def section(markdown: str, title: str) -> str:
    """The text under a `## title` heading, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", markdown, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def code_blocks(markdown: str) -> list[list[str]]:
    """The non-blank lines of each fenced code block."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", markdown, re.M | re.S)
    return [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]


def healthcheck_url(words: list[str]) -> str:
    """The URL a healthcheck command requests."""
    urls = [u for w in words for u in re.findall(r"https?://[^'\"\s)]+", w)]
    assert len(urls) == 1, words
    return urls[0]


# -- docker compose -----------------------------------------------------------------------


def test_compose_has_api_and_postgres() -> None:
    services = compose()["services"]
    assert {"api", "postgres"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(command_words(services["postgres"]["healthcheck"]["test"]))
    assert services["api"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "ports" not in services["api"], "a published port would stop --scale api=N"
    assert [str(p) for p in services["api"]["expose"]] == ["8000"]


def test_compose_lb_publishes_the_port_and_proxies_to_every_api_replica() -> None:
    """The load balancer's config names the api service and the port it serves on, and
    its health check reaches a replica's readiness route through it."""
    lb = compose()["services"]["lb"]
    assert lb["image"].startswith("caddy:")
    assert "8000:8000" in [str(p) for p in lb["ports"]]
    assert lb["depends_on"]["api"]["condition"] == "service_healthy"
    mount, target = str(lb["volumes"][0]).split(":")[:2]
    assert target == "/etc/caddy/Caddyfile"
    config = (ROOT / mount).read_text()
    assert re.search(r"dynamic a \{\s*name api\s*port 8000\b", config), config
    assert config.startswith("#") and "\n:8000 {" in config
    assert healthcheck_url(command_words(lb["healthcheck"]["test"])).endswith(":8000/readyz")


def test_the_load_balancer_config_is_valid_for_caddy(tmp_path: Path) -> None:
    """``caddy validate`` (Debian's caddy; .ci/run installs it) accepts deploy/Caddyfile."""
    caddy = shutil.which("caddy")
    if caddy is None:
        if os.environ.get("MMR_TEST_REQUIRE_CADDY") == "1":
            pytest.fail("caddy is not installed (apt-get install caddy)")
        pytest.skip("caddy is not installed")
    checked = subprocess.run(
        [caddy, "validate", "--config", str(ROOT / "deploy/Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_compose_named_volumes_are_declared_and_used() -> None:
    spec = compose()
    declared = set(spec["volumes"])
    used = {
        str(mount).split(":", 1)[0]
        for service in spec["services"].values()
        for mount in service.get("volumes", [])
    }
    named = {source for source in used if not source.startswith((".", "/", "~"))}
    assert named == declared, "every named volume is declared at top level and used"
    api_mounts = dict(str(m).split(":")[:2] for m in spec["services"]["api"]["volumes"])
    assert api_mounts["data"] == "/data"
    assert api_mounts["models"] == "/data/models"


def test_compose_api_environment() -> None:
    env = compose()["services"]["api"]["environment"]
    assert env["MMR_DATABASE_URL"].startswith("postgresql+psycopg://mmr:")
    assert env["MMR_DATABASE_URL"].endswith("@postgres:5432/mmr")
    # The key comes from the environment; compose refuses to start without it.
    assert env["MMR_API_KEYS"].startswith("${MMR_API_KEYS:?")
    assert env["MMR_MODEL"] == "${MMR_MODEL:-auto}"


def test_compose_worker_runs_mmr_worker_from_the_api_image() -> None:
    services = compose()["services"]
    worker, api = services["worker"], services["api"]
    assert worker["image"] == api["image"] and worker["command"] == ["mmr", "worker"]
    assert worker["depends_on"]["api"]["condition"] == "service_healthy"
    assert api["environment"]["MMR_WORKER"] == "off"
    shared = ("MMR_DATABASE_URL", "MMR_MODEL", "MMR_AUDIO_MODEL", "MMR_DEVICE")
    assert {k: worker["environment"][k] for k in shared} == {
        k: api["environment"][k] for k in shared
    }
    assert sorted(map(str, worker["volumes"])) == sorted(map(str, api["volumes"]))


def test_cli_worker_subcommand_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "_worker", lambda: 0)
    assert cli.main(compose()["services"]["worker"]["command"][1:]) == 0


def test_compose_api_waits_for_readyz_on_the_served_port() -> None:
    check = compose()["services"]["api"]["healthcheck"]["test"]
    assert healthcheck_url(command_words(check)) == "http://127.0.0.1:8000/readyz"


# -- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_healthcheck_hits_readyz() -> None:
    [check] = dockerfile("HEALTHCHECK")
    _, _, command = check.partition("CMD ")
    assert healthcheck_url(command_words(command.strip())) == "http://127.0.0.1:8000/readyz"


def test_healthchecks_hit_the_readiness_route_of_the_real_app(tmp_path: Path) -> None:
    app = unstarted_app(tmp_path)
    # app.routes holds included routers unflattened in this FastAPI; the schema lists them all.
    assert {"/readyz", "/healthz"} <= set(app.openapi()["paths"])
    # Without TestClient's context manager the lifespan never runs: /readyz must say "not
    # ready" (so the container turns healthy only once loaded), while /healthz says alive.
    client = TestClient(app)
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_dockerfile_starts_mmr_serve_like_the_makefile() -> None:
    [entry] = dockerfile("CMD")
    assert not dockerfile("ENTRYPOINT")
    assert command_words(entry) == ["mmr", *SERVE_ARGS]
    assert "$(VENV)/bin/mmr serve --host $(HOST) --port $(PORT)" in read("Makefile")
    assert "EXPOSE 8000" in [f"EXPOSE {e}" for e in dockerfile("EXPOSE")]


def test_dockerfile_installs_with_make_install() -> None:
    runs = " ".join(dockerfile("RUN"))
    assert re.search(r"\bmake install VENV=/opt/venv\b", runs)
    assert "TORCH_INDEX=" in runs
    assert any("PATH=/opt/venv/bin" in env for env in dockerfile("ENV"))
    [default_base] = [a for a in dockerfile("ARG") if a.startswith("BASE_IMAGE=")]
    assert default_base == "BASE_IMAGE=python:3.11-slim"
    [torch_index] = [a for a in dockerfile("ARG") if a.startswith("TORCH_INDEX=")]
    assert torch_index == "TORCH_INDEX=https://download.pytorch.org/whl/cpu"


def test_dockerfile_runs_as_a_user_with_data_in_the_volume() -> None:
    [user] = dockerfile("USER")
    assert user not in {"root", "0"}
    env = " ".join(dockerfile("ENV"))
    assert "MMR_DATA_DIR=/data" in env
    assert re.search(r"\bHF_HOME=/data/", env)


# -- console script -----------------------------------------------------------------------


def test_mmr_is_the_console_script_of_app_cli() -> None:
    project = tomllib.loads(read("pyproject.toml"))
    assert project["project"]["scripts"]["mmr"] == "app.cli:main"
    assert callable(cli.main)


def test_cli_accepts_the_container_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[str, int]] = []

    def fake_serve(host: str, port: int) -> int:
        served.append((host, port))
        return 0

    monkeypatch.setattr(cli, "_serve", fake_serve)
    assert cli.main(SERVE_ARGS) == 0
    assert served == [("0.0.0.0", 8000)]


@pytest.mark.parametrize(("argv", "status"), [(["--help"], 0), (["serve", "--bogus"], 2)])
def test_cli_parser_exit_codes(
    argv: list[str], status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == status
    capsys.readouterr()


# -- configuration ------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["docker-compose.yml", "Dockerfile", ".env.example"])
def test_every_mmr_variable_is_a_setting(name: str) -> None:
    named = set(MMR_VAR.findall(read(name)))
    assert named, f"{name} names no MMR_* variable"
    assert named <= settings_env_names(), f"unknown in {name}: {named - settings_env_names()}"


def test_env_example_lists_every_setting() -> None:
    assert settings_env_names() <= set(MMR_VAR.findall(read(".env.example")))


# -- README and CI ------------------------------------------------------------------------


def test_readme_quick_start_is_make_run_and_make_test() -> None:
    blocks = code_blocks(section(read("README.md"), "Quick start"))
    assert blocks == [["make run", "make test"]]


def test_readme_configure_leads_to_a_reference_of_every_setting() -> None:
    # The table moved into the manual, written from the settings (tests/app/test_settings_doc).
    configure = section(read("README.md"), "Configure")
    assert "(docs/settings.md)" in configure
    assert settings_env_names() <= set(MMR_VAR.findall(read("docs/settings.md")))


def test_ci_runs_make_test() -> None:
    lines = [line.strip() for line in read(".ci/run").splitlines()]
    assert any(re.fullmatch(r"(exec )?make test", line) for line in lines)


def test_the_shipped_model_weights_are_package_data() -> None:
    """A non-editable install (the image's) must carry mmr-mini, the offline fallback."""
    from fnmatch import fnmatch

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["models"]
    weights = ROOT / "models" / "encoders" / "mini" / "weights"
    shipped = [p for p in weights.rglob("*") if p.is_file()]
    assert {p.name for p in shipped} >= {"model.safetensors", "model.json"}
    for path in shipped:
        relative = str(path.relative_to(ROOT / "models"))
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative
