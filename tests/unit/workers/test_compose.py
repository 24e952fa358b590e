"""docker-compose.yml cannot run here (no Docker engine), so this pins down what can be checked
without one: every command of a service built from our image names a real entry point and parses
with its real argument parser, dependencies name real services, and GPU services sit behind the
``gpu`` profile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from stampede.cli import app
from workers import gpu, sweeps, worker

REPO = Path(__file__).resolve().parents[3]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
OURS = {name: s for name, s in SERVICES.items() if s.get("image") == "stampede:latest"}
STAMPEDE_COMMANDS = {"sweep", "demo", "sim", "worker", "agent", "scheduler", "db", "report"}


def test_every_service_of_the_fleet_is_there() -> None:
    assert set(SERVICES) == {
        "postgres",
        "redis",
        "migrate",
        "worker",
        "scheduler",
        "sweeps-worker",
        "simulator",
        "locust-master",
        "locust-worker",
        "dashboard",
        "ollama",
        "vllm",
        "agent",
    }
    assert set(OURS) == set(SERVICES) - {"postgres", "redis", "ollama", "vllm"}
    assert (SERVICES["ollama"]["image"], SERVICES["vllm"]["image"]) == ("ollama/ollama", "vllm/vllm-openai")


@pytest.mark.parametrize("name", sorted(OURS))
def test_command_names_an_existing_entry_point(name: str) -> None:
    program, *args = OURS[name]["command"]
    if program == "stampede":
        registered = set(typer.main.get_command(app).commands)
        assert args[0] in STAMPEDE_COMMANDS & registered
        if args[0] == "worker":
            worker.parse_args(args[1:])
        elif args[0] == "agent":
            gpu.parse_args(args[1:])
        elif args[0] == "scheduler":
            sweeps.parse_args(args[1:])
        elif args[0] == "db":
            assert args[1:] == ["upgrade"]
    elif program == "locust":
        assert args[:2] == ["-f", "loadgen/chat.py"] and (REPO / args[1]).is_file()
        assert "--master" in args or args[args.index("--master-host") + 1] == "locust-master"
    elif program == "streamlit":
        assert args[0] == "run" and (REPO / args[1]).is_file()
    else:
        pytest.fail(f"{name}: unknown entry point {program!r}")


def test_dependencies_name_services_and_gpu_services_need_the_gpu_profile() -> None:
    for name, service in SERVICES.items():
        assert set(service.get("depends_on", [])) <= set(SERVICES), name
        wants_gpu = "deploy" in service
        assert wants_gpu == (service.get("profiles") == ["gpu"]), name
    assert {n for n, s in SERVICES.items() if "deploy" in s} == {"ollama", "vllm", "agent"}


def test_everything_talks_to_the_compose_postgres_and_redis() -> None:
    for name, service in OURS.items():
        env = service["environment"]
        assert "@postgres:5432/" in env["STAMPEDE_DATABASE_URL"], name
        assert env["STAMPEDE_REDIS_URL"] == "redis://:${REDIS_PASSWORD:-stampede}@redis:6379/0", name


def test_redis_always_asks_for_the_password_our_services_send() -> None:
    command = SERVICES["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == "${REDIS_PASSWORD:-stampede}"
    assert SERVICES["redis"]["environment"]["REDISCLI_AUTH"] == "${REDIS_PASSWORD:-stampede}"  # its health check


def test_every_published_port_listens_where_stampede_bind_says() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if "ports" in s}
    assert set(published) >= {"postgres", "redis", "simulator", "locust-master", "dashboard"}
    for name, ports in published.items():
        for port in ports:
            assert str(port).startswith("${STAMPEDE_BIND:-127.0.0.1}:"), (name, port)


def test_locust_runs_the_user_class_of_its_targets_api() -> None:
    """Without a class named, Locust splits users between Ollama's and the OpenAI API's, and half fail."""
    target = SERVICES["locust-master"]["command"]
    assert target[target.index("--host") + 1] == "http://simulator:8000"
    assert "vllm" in SERVICES["simulator"]["command"]  # the simulator speaks the OpenAI API
    for name in ("locust-master", "locust-worker"):
        classes = [arg for arg in SERVICES[name]["command"] if arg.endswith("User")]
        assert classes == ["OpenAIChatUser"], name
        assert f"class {classes[0]}(ChatUser)" in (REPO / "loadgen" / "chat.py").read_text()


def test_the_locust_journal_outlives_its_containers() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "TMPDIR=/var/lib/stampede/journal" in dockerfile
    assert "chown stampede /var/lib/stampede/journal" in dockerfile
    for name in ("locust-master", "locust-worker"):
        assert "journal:/var/lib/stampede/journal" in SERVICES[name]["volumes"], name
    assert "journal" in COMPOSE["volumes"]


def test_dockerfile_copies_every_package_the_commands_use() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    for path in ("stampede", "loadgen", "workers", "dashboard", "simulator", "migrations", ".streamlit"):
        assert f"COPY {path} {path}" in dockerfile
