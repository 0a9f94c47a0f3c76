"""`make demo`, part 2: an email's life after the 202, told with the sink's simulator addresses.

A deferred recipient travels through the retry topic to delivery, and the status API shows each
step with its record's place in Kafka; a bounce puts the address on the suppression list, a
second email to it is suppressed without reaching the sink, and lifting the suppression lets
the next one through to bounce again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from deploy.local.errors import StackError
from deploy.local.kafka import run_kafka_tool
from deploy.local.sender import DEMO_SENDER
from deploy.local.settings import LocalSettings
from shared.retry_topics import retry_topic as topic_of_retry

SIMULATOR_DOMAIN = "simulator.example.com"


class Lifecycle:
    def __init__(
        self,
        settings: LocalSettings,
        http: httpx.Client,
        say: Callable[[str], None],
        step: Callable[[str], None],
        sink_counts: Callable[[list[str]], dict[str, int]],
    ) -> None:
        self.settings = settings
        self.http = http
        self.say = say
        self.step = step
        self.sink_counts = sink_counts
        self.api = f"http://{settings.api_host}:{settings.api_port}"

    def send(self, to: str, subject: str) -> str:
        email = {"from": DEMO_SENDER, "to": [to], "subject": subject, "text": f"{subject}."}
        answer = self.http.post(f"{self.api}/emails", json=email)
        if answer.status_code != 202:
            raise StackError(f"POST /emails answered {answer.status_code}: {answer.text}")
        queued = answer.json()
        self.say(
            f"POST /emails to {to} -> 202, {queued['topic']}-{queued['partition']} offset "
            f"{queued['offset']}, Location: {answer.headers.get('location')}"
        )
        return str(queued["id"])

    def status(self, message_id: str) -> dict[str, Any]:
        answer = self.http.get(f"{self.api}/emails/{message_id}")
        if answer.status_code != 200:
            return {"status": f"HTTP {answer.status_code}"}
        status: dict[str, Any] = answer.json()
        return status

    def wait_for_status(self, message_id: str, wanted: str, seconds: float) -> dict[str, Any]:
        """Poll GET /emails/{id} until it says `wanted`, printing each change."""
        deadline = time.monotonic() + seconds
        seen = None
        while True:
            status = self.status(message_id)
            if status["status"] != seen:
                seen = status["status"]
                self.say(f"GET /emails/{message_id} -> {seen}")
            if seen == wanted:
                return status
            if time.monotonic() > deadline:
                raise StackError(
                    f"The demo waited {seconds:.0f} s for {message_id} to be {wanted}; it is "
                    f"{seen}. See make logs."
                )
            time.sleep(0.5)

    def show_history(self, status: Mapping[str, Any]) -> None:
        for entry in status.get("history", []):
            record = entry.get("record") or {}
            where = f"{record.get('topic')}-{record.get('partition')}@{record.get('offset')}"
            reply = entry.get("reply") or {}
            said = f" ({reply.get('code')} {reply.get('text', '')[:50]})" if reply else ""
            self.say(f"  {entry['at'][:23]}  {entry['type']:<13} from {where}{said}")

    def suppressed_addresses(self) -> set[str]:
        answer = self.http.get(f"{self.api}/suppressions", params={"limit": 1000})
        return {entry["address"] for entry in answer.json().get("data", [])}

    def deferral(self, run_id: str) -> bool:
        address = f"deferred+{run_id}@{SIMULATOR_DOMAIN}"
        self.step(f"Send to {address}: the simulator answers 450 to its first try")
        message_id = self.send(address, "a deferred email")
        status = self.wait_for_status(message_id, "deferred", 30)
        [recipient] = status["recipients"]
        self.say(
            f"{recipient['address']}: {recipient['state']}, last reply "
            f"{(recipient.get('last_reply') or {}).get('code')}, next try at "
            f"{recipient.get('next_try_at')}"
        )

        first_step = self.settings.worker_retry_schedule[0]
        retry_topic = topic_of_retry(self.settings.email_topic, first_step)
        self.step(f"It waits in {retry_topic}, with its due time in a header; email.send moved on")
        result = run_kafka_tool(
            self.settings, "kafka-console-consumer.sh",
            "--bootstrap-server", self.settings.kafka_bootstrap_servers,
            "--topic", retry_topic, "--from-beginning", "--property", "print.headers=true",
            "--property", "print.offset=true", "--timeout-ms", "5000",
        )  # fmt: skip
        self.say(
            f"$ deploy/kafka/bin/kafka-console-consumer.sh --topic {retry_topic} "
            "--from-beginning --property print.headers=true"
        )
        for line in result.stdout.splitlines():
            if message_id in line:
                self.say(line[:150] + "...")

        self.step("The retry consumer (email-retry-group) delivers it when it is due")
        status = self.wait_for_status(message_id, "delivered", 180)
        self.show_history(status)
        return self.sink_counts([message_id])[message_id] == 1

    def suppression(self, run_id: str) -> bool:
        address = f"bounced+{run_id}@{SIMULATOR_DOMAIN}"
        self.step(f"Send to {address}: the simulator refuses it with 550 5.1.1")
        first = self.send(address, "a bounce")
        status = self.wait_for_status(first, "bounced", 30)
        self.say(f"last reply: {status['recipients'][0].get('last_reply')}")
        listed = address in self.suppressed_addresses()
        self.say(f"GET /suppressions lists {address}: {'yes' if listed else 'no'}")

        self.step("Send to it again: suppressed, and the sink receives nothing")
        second = self.send(address, "a suppressed email")
        self.wait_for_status(second, "suppressed", 30)
        reached = self.sink_counts([second])[second]
        self.say(f"the sink received it: {'yes' if reached else 'no'}")

        self.step(f"DELETE /suppressions/{address}: the next email is tried, and bounces again")
        lifted = self.http.delete(f"{self.api}/suppressions/{address}")
        self.say(f"DELETE /suppressions/{address} -> {lifted.status_code}")
        third = self.send(address, "after the lift")
        self.wait_for_status(third, "bounced", 30)
        return listed and not reached and lifted.status_code == 204


def run(
    settings: LocalSettings,
    http: httpx.Client,
    say: Callable[[str], None],
    step: Callable[[str], None],
    sink_counts: Callable[[list[str]], dict[str, int]],
) -> None:
    print("\nPart 2: an email's life after the 202, told by the sink's simulator addresses.")
    lifecycle = Lifecycle(settings, http, say, step, sink_counts)
    run_id = uuid.uuid4().hex[:8]
    delivered_once = lifecycle.deferral(run_id)
    suppressed = lifecycle.suppression(run_id)
    print(
        f"\nverdict: the deferred email delivered once after its retry: "
        f"{'yes' if delivered_once else 'no'}; the bounce suppressed the address until lifted: "
        f"{'yes' if suppressed else 'no'}"
    )
    if not (delivered_once and suppressed):
        raise StackError("Part 2 of the demo did not go as told: that is a bug, please report it.")
