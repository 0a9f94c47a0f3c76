"""The console's picture: offsets in kafka-consumer-groups.sh's terms, and the timeline."""

from __future__ import annotations

from typing import Any

from services.console.snapshot import (
    PAUSE_SECONDS,
    KafkaReading,
    Member,
    PartitionOffsets,
    Picture,
    RateMeter,
    Reading,
    RecentMessage,
    SinkReading,
)

WORKER = Member("m-1", "email-worker-a-1", "127.0.0.1", (0, 1))
OTHER_WORKER = Member("m-2", "email-worker-b-2", "10.0.0.2", (1,))


def kafka(
    ends: dict[int, int],
    committed: dict[int, int],
    members: tuple[Member, ...] = (WORKER,),
    state: str = "Stable",
    dlq_ends: dict[int, int] | None = None,
) -> KafkaReading:
    return KafkaReading(
        partitions=tuple(PartitionOffsets(p, 0, end) for p, end in ends.items()),
        dlq_partitions=tuple(PartitionOffsets(p, 0, end) for p, end in (dlq_ends or {}).items()),
        committed_offsets=committed,
        group_state=state,
        members=members,
    )


def picture() -> Picture:
    return Picture("email.send", "email.send.dlq", "email-send-group")


def events(snapshot: dict[str, Any], kind: str) -> list[str]:
    return [event["text"] for event in snapshot["timeline"] if event["kind"] == kind]


def test_rows_are_kafka_consumer_groups_describe_columns() -> None:
    snapshot = picture().update(Reading(100.0, kafka({0: 6, 1: 2}, {0: 4}), None, None))

    assert snapshot["partitions"] == [
        {
            "partition": 0,
            "log_start_offset": 0,
            "log_end_offset": 6,
            "current_offset": 4,
            "lag": 2,
            "member": {"member_id": "m-1", "client_id": "email-worker-a-1", "host": "127.0.0.1"},
        },
        {
            "partition": 1,
            "log_start_offset": 0,
            "log_end_offset": 2,
            "current_offset": None,  # the tool prints "-": nothing committed yet
            "lag": None,
            "member": {"member_id": "m-1", "client_id": "email-worker-a-1", "host": "127.0.0.1"},
        },
    ]
    # A partition with nothing committed is read from the beginning: all of it is lag.
    assert snapshot["total_lag"] == 2 + 2
    assert snapshot["group_state"] == "Stable"


def test_the_dead_letter_topic_is_counted() -> None:
    reading = kafka({0: 1}, {0: 1}, dlq_ends={0: 2, 1: 0, 2: 3})

    snapshot = picture().update(Reading(1.0, reading, None, None))

    assert snapshot["dlq"] == {
        "topic": "email.send.dlq",
        "end_offsets": {"0": 2, "1": 0, "2": 3},
        "count": 5,
    }


def test_a_stopped_worker_shows_as_a_pause_then_a_resume_at_the_committed_offset() -> None:
    view = picture()
    view.update(Reading(0.0, kafka({0: 4}, {0: 4}), None, None))
    # The worker stops; three records arrive and CURRENT-OFFSET stays at 4, owned by no one.
    paused = view.update(Reading(1.0, kafka({0: 7}, {0: 4}, members=(), state="Empty"), None, None))
    resumed = view.update(Reading(9.0, kafka({0: 7}, {0: 7}), None, None))

    assert events(paused, "paused") == ["email.send-0 waits at offset 4, lag 3"]
    # Paused since the last look at which nothing was waiting (t=0).
    assert events(resumed, "resumed") == ["email.send-0 resumed at offset 4 (paused 9.0 s)"]
    assert resumed["total_lag"] == 0


def test_an_owned_partition_standing_still_with_lag_is_a_pause() -> None:
    view = picture()
    view.update(Reading(0.0, kafka({0: 4}, {0: 4}), None, None))
    # An email being retried holds CURRENT-OFFSET at 4 while its worker stays in the group.
    before = view.update(Reading(0.5, kafka({0: 5}, {0: 4}), None, None))
    paused = view.update(Reading(PAUSE_SECONDS, kafka({0: 5}, {0: 4}), None, None))

    assert events(before, "paused") == []
    assert events(paused, "paused") == ["email.send-0 waits at offset 4, lag 1"]


def test_standing_still_with_nothing_to_read_is_not_a_pause() -> None:
    view = picture()
    for second in range(10):
        snapshot = view.update(Reading(float(second), kafka({0: 4}, {0: 4}), None, None))
    # Then a record arrives and is read at once: still no pause, no resume.
    snapshot = view.update(Reading(10.0, kafka({0: 5}, {0: 4}), None, None))
    snapshot = view.update(Reading(10.5, kafka({0: 5}, {0: 5}), None, None))

    assert events(snapshot, "paused") == []
    assert events(snapshot, "resumed") == []


def test_members_joining_leaving_and_partitions_moving_are_told() -> None:
    view = picture()
    view.update(Reading(0.0, kafka({0: 0, 1: 0}, {}), None, None))
    rebalancing = view.update(
        Reading(1.0, kafka({0: 0, 1: 0}, {}, (WORKER,), "PreparingRebalance"), None, None)
    )
    split = Member("m-1", "email-worker-a-1", "127.0.0.1", (0,))
    joined = view.update(Reading(2.0, kafka({0: 0, 1: 0}, {}, (split, OTHER_WORKER)), None, None))
    left = view.update(Reading(3.0, kafka({0: 0, 1: 0}, {}, (OTHER_WORKER,)), None, None))

    assert events(rebalancing, "group_state") == [
        "group email-send-group: Stable → PreparingRebalance"
    ]
    assert events(joined, "member_joined") == ["email-worker-b-2 (10.0.0.2) joined the group"]
    assert "email.send-1 assigned to email-worker-b-2 (10.0.0.2)" in events(joined, "reassigned")
    assert events(left, "member_left") == ["email-worker-a-1 (127.0.0.1) left the group"]
    assert joined["timeline"][0]["at"].startswith("1970-01-01T00:00:02")  # newest first


def test_kafka_down_keeps_the_last_offsets_marked_with_their_age() -> None:
    view = picture()
    view.update(Reading(10.0, kafka({0: 6}, {0: 6}), None, None))

    down = view.update(Reading(25.0, None, None, None, {"kafka": "no answer within 1 s"}))
    back = view.update(Reading(30.0, kafka({0: 6}, {0: 6}), None, None))

    assert down["kafka"] == {
        "live": False,
        "error": "no answer within 1 s",
        "as_of": "1970-01-01T00:00:10.000+00:00",
        "age_seconds": 15.0,
    }
    assert down["partitions"][0]["log_end_offset"] == 6
    assert events(down, "kafka_down") == ["Kafka is not answering: no answer within 1 s"]
    assert back["kafka"]["live"] is True
    assert events(back, "kafka_back") == ["Kafka answers again after 5.0 s"]


def test_kafka_never_read_shows_no_offsets() -> None:
    snapshot = picture().update(Reading(1.0, None, None, None, {"kafka": "refused"}))

    assert snapshot["kafka"]["live"] is False
    assert snapshot["kafka"]["as_of"] is None
    assert snapshot["partitions"] == []
    assert snapshot["total_lag"] is None


def test_rates_come_from_counter_differences() -> None:
    view = picture()
    sink = SinkReading(
        received_total=0,
        duplicates_total=0,
        latency_p50_seconds=0.008,
        latency_p99_seconds=0.017,
        latency_count=30,
        recent_messages=(
            RecentMessage("a", "<x@d>", "t", "f@example.com", ("t@example.com",), "s", True, 2),
        ),
    )
    view.update(Reading(0.0, None, 100.0, sink))
    snapshot = view.update(
        Reading(2.0, None, 140.0, SinkReading(30, 1, 0.008, 0.017, 30, sink.recent_messages))
    )
    api_down = view.update(Reading(3.0, None, None, sink, {"api": "ConnectError"}))

    assert snapshot["rates"]["accepted_per_second"] == 20.0
    assert snapshot["rates"]["delivered_per_second"] == 15.0
    assert snapshot["rates"]["latency_p99_seconds"] == 0.017
    assert snapshot["recent_messages"][0]["duplicate"] is True
    assert snapshot["recent_messages"][0]["message_id_count"] == 2
    # A source that did not answer gives no number, rather than its last one.
    assert api_down["rates"]["accepted_per_second"] is None
    assert api_down["sources"]["api"] == {"live": False, "error": "ConnectError"}


def test_rate_meter_forgets_old_samples_and_restarted_counters() -> None:
    meter = RateMeter(window_seconds=5)
    for second in range(20):
        meter.add(float(second), 10.0 * second if second < 10 else 1000 + 50.0 * second)

    assert meter.per_second() == 50.0

    meter.add(21.0, 3.0)  # the service restarted: its counter began again
    assert meter.per_second() is None


def test_a_read_still_on_its_way_is_not_an_outage_until_the_offsets_are_old() -> None:
    view = picture()
    view.update(Reading(10.0, kafka({0: 6}, {0: 6}), None, None))

    waiting = view.update(Reading(11.0, None, None, None))
    old = view.update(Reading(13.0, None, None, None))

    assert waiting["kafka"]["live"] is True
    assert events(waiting, "kafka_down") == []
    assert old["kafka"]["live"] is False
    assert old["kafka"]["error"] == "no answer for 3 s"
    assert old["kafka"]["age_seconds"] == 3.0


def test_an_outage_is_not_counted_as_a_pause() -> None:
    view = picture()
    view.update(Reading(0.0, kafka({0: 4}, {0: 2}), None, None))
    view.update(Reading(1.0, None, None, None, {"kafka": "refused"}))
    back = view.update(Reading(30.0, kafka({0: 4}, {0: 2}), None, None))

    assert events(back, "paused") == []


def test_owners_stand_while_the_group_rebalances() -> None:
    view = picture()
    view.update(Reading(0.0, kafka({0: 4, 1: 4}, {0: 2, 1: 2}), None, None))
    # Kafka shows members with no partitions until the group is Stable again.
    unassigned = Member("m-1", "email-worker-a-1", "127.0.0.1", ())
    rebalancing = view.update(
        Reading(
            1.0, kafka({0: 4, 1: 4}, {0: 2, 1: 2}, (unassigned,), "PreparingRebalance"), None, None
        )
    )
    stable = view.update(Reading(2.0, kafka({0: 4, 1: 4}, {0: 3, 1: 3}), None, None))

    assert rebalancing["partitions"][0]["member"]["client_id"] == "email-worker-a-1"
    assert events(rebalancing, "paused") == []
    assert sorted(events(stable, "reassigned")) == [
        "email.send-0 assigned to email-worker-a-1 (127.0.0.1)",
        "email.send-1 assigned to email-worker-a-1 (127.0.0.1)",
    ]  # once, at the first look: nothing moved since
