"""The baseline: a worker loop written the obvious way, one record at a time, a new SMTP
connection for every email and a synchronous commit after each one.

`python -m tests.bench.naive_worker COUNT` (settings from the environment, as every service);
exits after COUNT records."""

from __future__ import annotations

import asyncio
import sys

import aiosmtplib

from shared.kafka import create_consumer
from shared.schema import parse_record
from shared.settings import load_settings
from tests.reference_mime import addresses, build_message


async def main(count: int) -> None:
    settings = load_settings()
    consumer = create_consumer(settings, client_id="naive-worker")
    consumer.subscribe([settings.email_topic])
    await consumer.start()
    try:
        for _ in range(count):
            record = await consumer.getone()
            email = parse_record(record.value)
            await aiosmtplib.send(
                build_message(email, settings.message_id_domain),
                sender=addresses([email.sender])[0],
                recipients=addresses(email.recipients),
                hostname=settings.smtp_host,
                port=settings.smtp_port,
            )
            await consumer.commit()
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
