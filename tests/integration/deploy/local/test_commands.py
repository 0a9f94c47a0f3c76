"""The local stack's commands on a fresh machine: repeatable, and clear about what is missing.

Each test runs `python -m deploy.local` (what the Makefile runs) or `make` itself in a private
run directory with free ports, so the developer's own `make up` stack is never touched.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from deploy.local.kafka import KAFKA_TOOLS_DIR
from shared.settings import PROJECT_ROOT
from tests.conftest import run_stack_command, stack_env

REAL_JAVA = shutil.which("java")
REAL_MAVEN = shutil.which("mvn")


def bin_dir_with(tmp_path: Path, **programs: str) -> Path:
    """A directory for PATH that holds only the named programs, as links to the real ones."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, target in programs.items():
        (bin_dir / name).symlink_to(target)
    return bin_dir


def without_java_home(env: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name != "JAVA_HOME"}


def assert_explained(result: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def test_missing_java_is_explained(tmp_path: Path) -> None:
    env = without_java_home(stack_env(tmp_path / "run", KAFKA_LIBS_DIR=str(tmp_path / "libs")))
    env["PATH"] = str(bin_dir_with(tmp_path))

    result = run_stack_command("kafka-up", env)

    assert_explained(result, "Java was not found", "apt-get install openjdk-17")


@pytest.mark.skipif(REAL_JAVA is None, reason="needs Java to get as far as Maven")
def test_missing_maven_is_explained(tmp_path: Path) -> None:
    env = without_java_home(stack_env(tmp_path / "run", KAFKA_LIBS_DIR=str(tmp_path / "libs")))
    env["PATH"] = str(bin_dir_with(tmp_path, java=str(REAL_JAVA)))

    result = run_stack_command("kafka-up", env)

    assert_explained(result, "Maven was not found", "apt-get install maven")


@pytest.mark.skipif(REAL_MAVEN is None, reason="needs Maven")
def test_unreachable_registry_with_an_empty_cache_is_explained(tmp_path: Path) -> None:
    # The real Maven, offline and with an empty local repository: it cannot reach any registry.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    offline_maven = bin_dir / "mvn"
    offline_maven.write_text(
        f'#!/bin/sh\nexec {REAL_MAVEN} --offline -Dmaven.repo.local={tmp_path}/m2 "$@"\n'
    )
    offline_maven.chmod(0o755)
    env = stack_env(tmp_path / "run", KAFKA_LIBS_DIR=str(tmp_path / "libs"))
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    result = run_stack_command("fetch-kafka", env)

    assert_explained(result, "Maven could not fetch the Apache Kafka jars", "repo.maven.apache.org")
    assert not (tmp_path / "libs").exists(), "a failed fetch leaves no half-filled cache behind"


@pytest.mark.parametrize("setting", ["KAFKA_BOOTSTRAP_SERVERS", "KAFKA_CONTROLLER_PORT"])
def test_port_in_use_names_the_port_and_the_setting(tmp_path: Path, setting: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        value = f"127.0.0.1:{port}" if setting == "KAFKA_BOOTSTRAP_SERVERS" else str(port)
        env = stack_env(tmp_path / "run", **{setting: value})

        result = run_stack_command("kafka-up", env)

    assert_explained(result, f"Port {port} on 127.0.0.1 is already in use", setting)


def test_invalid_setting_fails_with_one_clear_line(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "run", TOPIC_PARTITIONS="three")

    result = run_stack_command("topics", env)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "invalid setting TOPIC_PARTITIONS='three': "
        "Input should be a valid integer, unable to parse string as an integer"
    ]


def test_make_up_and_down_are_safe_to_repeat(tmp_path: Path) -> None:
    env = stack_env(tmp_path / "run")

    def make(target: str) -> str:
        result = subprocess.run(
            ["make", "-s", target], env=env, cwd=PROJECT_ROOT,
            capture_output=True, text=True, timeout=180, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    try:
        assert "Kafka is not running." in make("down")
        first_up = make("up")
        assert "is ready on" in first_up
        assert "Topic email.send: created, 3 partitions." in first_up
        second_up = make("up")
        assert "Kafka is already running on" in second_up
        assert "Topic email.send: exists, 3 partitions." in second_up
        assert "Kafka stopped." in make("down")
        assert "Kafka is not running." in make("down")
    finally:
        run_stack_command("kafka-down", env)


def test_tools_explain_missing_jars(tmp_path: Path) -> None:
    env = {**os.environ, "KAFKA_LIBS_DIR": str(tmp_path / "empty")}
    result = subprocess.run(
        [str(KAFKA_TOOLS_DIR / "kafka-topics.sh"), "--list"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "make kafka-fetch" in result.stderr


def test_tools_explain_missing_java(tmp_path: Path) -> None:
    shell_only = bin_dir_with(tmp_path, bash=_which("bash"), dirname=_which("dirname"))
    env = without_java_home({**os.environ, "PATH": str(shell_only)})
    result = subprocess.run(
        [str(KAFKA_TOOLS_DIR / "kafka-topics.sh"), "--list"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "Java was not found" in result.stderr


def _which(program: str) -> str:
    path = shutil.which(program)
    assert path is not None, f"{program} is not installed"
    return path
