"""One log format for every service: a line per event, time first, easy to grep and to tail."""

from __future__ import annotations

import logging
import sys


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        force=True,
    )
    # aiokafka reports every refused connection at ERROR while Kafka is down; one line from
    # our own code says that better.
    logging.getLogger("aiokafka").setLevel(max(logging.getLevelName(level), logging.WARNING))
