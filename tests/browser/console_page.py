"""What the browser tests and the benchmark read off the console's page, in its own terms."""

from __future__ import annotations

# The records the group has committed, over every lane: the sum of the CURRENT-OFFSETs.
CONSUMED_SUM = """() => [...document.querySelectorAll('[data-testid=partition-lane]')]
    .reduce((sum, lane) => sum + Number(lane.dataset.currentOffset || 0), 0)"""


# Each lane: its partition, CURRENT-OFFSET, LOG-END-OFFSET, the offset its ▼ marker sits on,
# its leader and in-sync replicas ("1,3").
LANES = """() => [...document.querySelectorAll('[data-testid=partition-lane]')].map(lane => ({
    partition: lane.dataset.partition,
    current: lane.dataset.currentOffset,
    end: lane.dataset.logEndOffset,
    leader: lane.dataset.leader,
    isr: lane.dataset.isr,
    marker_on: lane.querySelector('[data-testid=current-offset-marker]')
        ?.closest('.slot').dataset.offset ?? "",
}))"""
