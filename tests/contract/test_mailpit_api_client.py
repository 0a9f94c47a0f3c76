"""The `mailpit-api` client from the npm registry, run under Node against our sink unchanged:
list, search, wait, get the latest, its headers and raw source, chaos, and every delete."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.contract.conftest import reset
from tests.contract.mails import deliver, mailbox
from tests.integration.smtp_sink.conftest import RunningSink

CLIENT_DIR = Path(__file__).parent / "mailpit-api"
INSTALL_NODE = (
    "Install Node.js 18 or newer with npm (Debian/Ubuntu: sudo apt-get install nodejs npm; "
    "macOS: brew install node)."
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def node() -> str:
    """Node, with the client installed from package-lock.json (`npm ci`) if it is not yet."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(f"Node.js and npm run the mailpit-api client. {INSTALL_NODE}")
    if not (CLIENT_DIR / "node_modules" / "mailpit-api").is_dir():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=CLIENT_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stderr}"
    return node


@pytest.fixture(scope="module")
async def answers(node: str, contract_sink: RunningSink) -> dict[str, Any]:
    """What the client answered, run once against the sink holding the three mails."""
    await reset(contract_sink.api)
    await deliver(contract_sink.smtp_port, mailbox())
    return await asyncio.to_thread(run_client, node, contract_sink.api)


def run_client(node: str, base_url: str) -> dict[str, Any]:
    ran = subprocess.run(
        [node, "client.mjs", base_url],
        cwd=CLIENT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, f"the client failed against the sink:\n{ran.stderr}"
    answered: dict[str, Any] = json.loads(ran.stdout)
    return answered


def test_it_lists_searches_and_waits(answers: dict[str, Any]) -> None:
    assert answers["info"]["Messages"] == 3
    assert answers["info"]["Version"].startswith("kafka-email-pipeline ")
    assert answers["list"] == {
        "total": 3,
        "subjects": ["Weekly digest", "Invoice attached", "Order shipped"],
    }
    assert answers["page"] == {"start": 1, "subjects": ["Invoice attached"]}
    assert answers["search"] == {"messages_count": 1, "subjects": ["Invoice attached"]}
    assert answers["waitForMessage"] == "Order shipped"
    assert answers["waitForMessages"] == 3


def test_it_gets_the_latest_its_headers_and_raw_source(answers: dict[str, Any]) -> None:
    newest = mailbox()[-1]
    latest = answers["latest"]

    assert (latest["Subject"], latest["MessageID"]) == (newest.subject, newest.message_id)
    assert latest["Text"].startswith("Weekly digest: first line of the body.")
    assert answers["headers"] == {"Subject": ["Weekly digest"]}
    assert f"Message-ID: <{newest.message_id}>" in answers["raw"]


def test_it_sets_and_resets_chaos(answers: dict[str, Any]) -> None:
    off = {"ErrorCode": 451, "Probability": 0}

    assert answers["chaos"]["before"]["Recipient"] == off
    assert answers["chaos"]["set"]["Recipient"] == {"ErrorCode": 451, "Probability": 50}
    assert answers["chaos"]["reset"] == {
        "Sender": off,
        "Recipient": off,
        "Authentication": {"ErrorCode": 535, "Probability": 0},
    }


def test_it_deletes_by_id_by_search_and_all(answers: dict[str, Any]) -> None:
    assert answers["deleted"] == {
        "byId": ["ok", ["Weekly digest", "Invoice attached"]],
        "bySearch": ["ok", ["Weekly digest"]],
        "all": ["ok", 0],
    }
