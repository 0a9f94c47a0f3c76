"""The console's picture: offsets in kafka-consumer-groups.sh's terms, brokers and replicas in
kafka-topics.sh's, the group's generation, and the timeline."""

from __future__ import annotations

from typing import Any

from services.console.snapshot import (
    PAUSE_SECONDS,
    Broker,
    DueRecord,
    GroupReading,
    KafkaReading,
    Member,
    PartitionOffsets,
    Picture,
    RateMeter,
    Reading,
    RecentMessage,
    Replicas,
    SinkReading,
    Watch,
)

TOPIC, DLQ, EVENTS = "email.send", "email.send.dlq", "email.events"
RETRY_1M, RETRY_5M = "email.send.retry-1m", "email.send.retry-5m"
GROUP, STATUS_GROUP, RETRY_GROUP = "email-send-group", "email-status-group", "email-retry-group"
WATCH = Watch(TOPIC, DLQ, GROUP, EVENTS, STATUS_GROUP, (RETRY_1M, RETRY_5M), RETRY_GROUP)


def sends(*partitions: int) -> tuple[tuple[str, int], ...]:
    """A member's assignment: these partitions of email.send."""
    return tuple((TOPIC, partition) for partition in partitions)


WORKER = Member("m-1", "email-worker-a-1", "127.0.0.1", sends(0, 1))
OTHER_WORKER = Member("m-2", "email-worker-b-2", "10.0.0.2", sends(1))
BOOTSTRAP = "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
NODES = {n: Broker(n, "127.0.0.1", 19090 + 2 * n) for n in (1, 2, 3)}


def kafka(
    ends: dict[int, int],
    committed: dict[int, int],
    members: tuple[Member, ...] = (WORKER,),
    state: str = "Stable",
    dlq_ends: dict[int, int] | None = None,
    brokers: tuple[Broker, ...] = (),
    replicas: tuple[Replicas, ...] = (),
    unanswered: dict[int, str] | None = None,
    stale: tuple[int, ...] = (),
    generation: int | None = None,
    others: dict[str, GroupReading] | None = None,
    offsets: dict[str, tuple[PartitionOffsets, ...]] | None = None,
    due: dict[tuple[str, int], tuple[DueRecord, ...]] | None = None,
) -> KafkaReading:
    """A look at email.send (log ends and the group's CURRENT-OFFSETs by partition) and its
    dead letters; with `others`, the other groups, and `offsets`, their topics'."""
    main = GroupReading(
        state, members, {(TOPIC, p): o for p, o in committed.items()}, generation=generation
    )
    return KafkaReading(
        offsets={
            TOPIC: tuple(PartitionOffsets(p, 0, end, p not in stale) for p, end in ends.items()),
            DLQ: tuple(PartitionOffsets(p, 0, end) for p, end in (dlq_ends or {}).items()),
            **(offsets or {}),
        },
        groups={GROUP: main, **(others or {})},
        brokers=brokers,
        replicas=replicas,
        unanswered=unanswered or {},
        due=due or {},
    )


def on_three_nodes(
    leaders: dict[int, int], isr: dict[int, tuple[int, ...]]
) -> tuple[Replicas, ...]:
    """email.send's partitions with three replicas each, their leaders and ISR as given."""
    return tuple(
        Replicas("email.send", p, leader, (1, 2, 3), isr.get(p, (1, 2, 3)))
        for p, leader in leaders.items()
    )


def picture(bootstrap_servers: str = "") -> Picture:
    return Picture(WATCH, bootstrap_servers)


def events(snapshot: dict[str, Any], kind: str) -> list[str]:
    return [event["text"] for event in snapshot["timeline"] if event["kind"] == kind]


def test_rows_are_kafka_consumer_groups_describe_columns() -> None:
    one_broker = Replicas("email.send", 0, 1, (1,), (1,)), Replicas("email.send", 1, 1, (1,), (1,))
    reading = kafka({0: 6, 1: 2}, {0: 4}, brokers=(NODES[1],), replicas=one_broker)

    snapshot = picture().update(Reading(100.0, reading, None, None))

    owner = {
        "member_id": "m-1",
        "group_instance_id": None,
        "client_id": "email-worker-a-1",
        "host": "127.0.0.1",
    }
    where = {"leader": 1, "replicas": [1], "isr": [1], "under_replicated": False}
    assert snapshot["partitions"] == [
        {
            "partition": 0,
            "log_start_offset": 0,
            "log_end_offset": 6,
            "current_offset": 4,
            "lag": 2,
            "member": owner,
            "offsets_live": True,
            **where,
        },
        {
            "partition": 1,
            "log_start_offset": 0,
            "log_end_offset": 2,
            "current_offset": None,  # the tool prints "-": nothing committed yet
            "lag": None,
            "member": owner,
            "offsets_live": True,
            **where,
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
    split = Member("m-1", "email-worker-a-1", "127.0.0.1", sends(0))
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
    unassigned = Member("m-1", "email-worker-a-1", "127.0.0.1", sends())
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


def test_one_broker_is_up_and_leads_every_partition() -> None:
    one_broker = (
        Replicas("email.send", 0, 1, (1,), (1,)),
        Replicas("email.send.dlq", 0, 1, (1,), (1,)),
    )
    reading = kafka({0: 1}, {0: 1}, brokers=(NODES[1],), replicas=one_broker)

    snapshot = picture("127.0.0.1:19092").update(Reading(1.0, reading, None, None))

    assert snapshot["brokers"] == [
        {
            "node_id": 1,
            "address": "127.0.0.1:19092",
            "rack": None,
            "status": "up",
            "error": None,
            "leads": ["email.send-0", "email.send.dlq-0"],
            "coordinates": [],
        }
    ]
    assert snapshot["under_replicated"] == []
    assert {e["kind"] for e in snapshot["timeline"]} == {"first_look", "reassigned"}


def test_a_stopped_broker_is_down_and_the_partitions_it_led_have_a_new_leader_and_a_short_isr() -> (
    None
):
    view = picture(BOOTSTRAP)
    whole = on_three_nodes({0: 1, 1: 2, 2: 3}, {})
    view.update(
        Reading(
            0.0,
            kafka({0: 0, 1: 0, 2: 0}, {}, brokers=tuple(NODES.values()), replicas=whole),
            None,
            None,
        )
    )
    # Node 2 stops: the metadata no longer lists it, node 3 leads partition 1, and no ISR has 2.
    without_2 = on_three_nodes({0: 1, 1: 3, 2: 3}, {0: (1, 3), 1: (1, 3), 2: (1, 3)})
    down = view.update(
        Reading(
            1.0,
            kafka({0: 0, 1: 0, 2: 0}, {}, brokers=(NODES[1], NODES[3]), replicas=without_2),
            None,
            None,
        )
    )
    back = view.update(
        Reading(
            9.0,
            kafka(
                {0: 0, 1: 0, 2: 0},
                {},
                brokers=tuple(NODES.values()),
                replicas=on_three_nodes({0: 1, 1: 3, 2: 3}, {}),
            ),
            None,
            None,
        )
    )

    assert [(b["node_id"], b["status"]) for b in down["brokers"]] == [
        (1, "up"),
        (2, "down"),
        (3, "up"),
    ]
    assert down["brokers"][2]["leads"] == ["email.send-1", "email.send-2"]
    lane = down["partitions"][1]
    assert (lane["leader"], lane["isr"], lane["under_replicated"]) == (3, [1, 3], True)
    assert down["under_replicated"] == ["email.send-0", "email.send-1", "email.send-2"]
    assert events(down, "broker_down") == [
        "broker 2 (127.0.0.1:19094) is down: the cluster's metadata no longer lists it"
    ]
    assert events(down, "leader_moved") == ["new leader: email.send-1 2 → 3"]
    assert events(down, "under_replicated") == [
        "under-replicated: email.send-0 (ISR [1, 3] of [1, 2, 3]), "
        "email.send-1 (ISR [1, 3] of [1, 2, 3]), email.send-2 (ISR [1, 3] of [1, 2, 3])"
    ]
    assert [b["status"] for b in back["brokers"]] == ["up", "up", "up"]
    assert back["under_replicated"] == []
    assert events(back, "broker_up") == ["broker 2 (127.0.0.1:19094) is up again"]
    assert events(back, "in_sync") == [
        "every replica in sync again: email.send-0, email.send-1, email.send-2"
    ]


def test_a_broker_that_does_not_answer_greys_only_the_partitions_it_leads() -> None:
    view = picture(BOOTSTRAP)
    replicas = on_three_nodes({0: 1, 1: 2, 2: 3}, {})
    reading = kafka(
        {0: 5, 1: 5, 2: 5},
        {0: 5, 1: 5, 2: 5},
        brokers=tuple(NODES.values()),
        replicas=replicas,
        unanswered={2: "NodeNotReadyError: node 2 is not ready"},
        stale=(1,),
    )

    snapshot = view.update(Reading(1.0, reading, None, None))

    assert snapshot["kafka"]["live"] is True
    assert [lane["offsets_live"] for lane in snapshot["partitions"]] == [True, False, True]
    assert snapshot["brokers"][1]["status"] == "not_answering"
    assert events(snapshot, "broker_unanswered") == [
        "broker 2 (127.0.0.1:19094) does not answer: NodeNotReadyError: node 2 is not ready"
    ]


def test_a_bootstrap_server_never_listed_is_down_only_when_the_metadata_lists_fewer() -> None:
    started_without_3 = kafka({0: 0}, {}, brokers=(NODES[1], NODES[2]))
    another_name = kafka({0: 0}, {}, brokers=(NODES[1],))

    short = picture(BOOTSTRAP).update(Reading(1.0, started_without_3, None, None))
    alias = picture("localhost:19092").update(Reading(1.0, another_name, None, None))

    assert [(b["node_id"], b["address"], b["status"]) for b in short["brokers"]] == [
        (1, "127.0.0.1:19092", "up"),
        (2, "127.0.0.1:19094", "up"),
        (None, "127.0.0.1:19096", "down"),
    ]
    assert events(short, "broker_down") == [
        "the broker at 127.0.0.1:19096 is down: a bootstrap server the cluster's metadata has "
        "not listed"
    ]
    assert [(b["node_id"], b["status"]) for b in alias["brokers"]] == [(1, "up")]


STATIC_A = Member("worker-a-1f3c", "email-worker-h-101", "10.0.0.1", sends(0, 1), "worker-a")
STATIC_B = Member("worker-b-77aa", "email-worker-h-102", "10.0.0.2", sends(2), "worker-b")


def test_a_static_member_back_within_the_session_timeout_is_not_a_rebalance() -> None:
    view = picture()
    view.update(
        Reading(0.0, kafka({0: 0, 1: 0, 2: 0}, {}, (STATIC_A, STATIC_B), generation=4), None, None)
    )
    # worker-a restarted: Kafka kept its place, gave it a new member id and its own partitions.
    restarted = Member("worker-a-9e02", "email-worker-h-230", "10.0.0.1", sends(0, 1), "worker-a")
    back = view.update(
        Reading(3.0, kafka({0: 0, 1: 0, 2: 0}, {}, (restarted, STATIC_B), generation=4), None, None)
    )

    assert events(back, "static_member_back") == [
        "worker-a (static) came back: same partitions email.send-0, email.send-1, no rebalance "
        "(generation 4, unchanged)"
    ]
    assert back["group_generation"] == 4
    [first_look] = events(back, "first_look")
    assert "is Stable with 2 member(s), generation 4;" in first_look
    assert events(back, "generation") == []
    assert events(back, "member_joined") == events(back, "member_left") == []
    assert sorted(events(back, "reassigned")) == [
        "email.send-0 assigned to worker-a (static; email-worker-h-101, 10.0.0.1)",
        "email.send-1 assigned to worker-a (static; email-worker-h-101, 10.0.0.1)",
        "email.send-2 assigned to worker-b (static; email-worker-h-102, 10.0.0.2)",
    ]  # at the first look only: the partitions did not move
    assert back["members"][0]["group_instance_id"] == "worker-a"
    assert back["partitions"][0]["member"]["member_id"] == "worker-a-9e02"


def test_a_static_member_back_under_a_new_generation_came_back_to_a_rebalance() -> None:
    view = picture()
    view.update(Reading(0.0, kafka({0: 0}, {}, (STATIC_A, STATIC_B), generation=4), None, None))
    restarted = Member("worker-a-9e02", "email-worker-h-230", "10.0.0.1", sends(0, 1), "worker-a")
    # The group rebalanced and settled between two looks, with the same owners.
    back = view.update(
        Reading(3.0, kafka({0: 0}, {}, (restarted, STATIC_B), generation=5), None, None)
    )

    assert events(back, "static_member_back") == [
        "worker-a (static) came back, and the group rebalanced"
    ]


def test_an_ordinary_leave_and_join_are_rebalances_each_a_generation() -> None:
    view = picture()
    view.update(Reading(0.0, kafka({0: 0, 1: 0}, {}, (WORKER,), generation=1), None, None))
    # The worker restarts, dynamic: a new member id, and the group rebalances (seen mid-way).
    view.update(
        Reading(1.0, kafka({0: 0, 1: 0}, {}, (), "PreparingRebalance", generation=1), None, None)
    )
    empty = view.update(
        Reading(2.0, kafka({0: 0, 1: 0}, {}, (), "Empty", generation=2), None, None)
    )
    again = Member("m-9", "email-worker-a-7", "127.0.0.1", sends(0, 1))
    # Its join and the rebalance after it happen between two looks: the members tell it.
    joined = view.update(Reading(3.0, kafka({0: 0, 1: 0}, {}, (again,), generation=3), None, None))

    assert empty["group_generation"] == 2
    assert joined["group_generation"] == 3
    assert events(joined, "member_left") == ["email-worker-a-1 (127.0.0.1) left the group"]
    assert events(joined, "member_joined") == ["email-worker-a-7 (127.0.0.1) joined the group"]
    assert events(joined, "rebalance") == [
        "group email-send-group rebalanced (members changed between two looks)",
        "group email-send-group rebalanced (Stable → PreparingRebalance)",
    ]
    assert events(joined, "generation") == [
        "group email-send-group is at generation 3 (was 2)",
        "group email-send-group is at generation 2 (was 1)",
    ]  # the first look told generation 1 in its own words
    assert events(joined, "static_member_back") == []


def test_a_generation_not_read_yet_is_unknown_and_not_a_change() -> None:
    view = picture()
    first = view.update(Reading(0.0, kafka({0: 0}, {}, (WORKER,)), None, None))
    read = view.update(Reading(1.0, kafka({0: 0}, {}, (WORKER,), generation=7), None, None))

    assert first["group_generation"] is None
    assert read["group_generation"] == 7
    assert events(read, "generation") == ["group email-send-group is at generation 7"]


def test_partitions_moving_between_two_stable_looks_is_a_rebalance() -> None:
    view = picture()
    split = Member("m-1", "email-worker-a-1", "127.0.0.1", sends(0))
    view.update(Reading(0.0, kafka({0: 0, 1: 0}, {}, (split, OTHER_WORKER)), None, None))
    swapped = (
        Member("m-1", "email-worker-a-1", "127.0.0.1", sends(1)),
        Member("m-2", "email-worker-b-2", "10.0.0.2", sends(0)),
    )

    moved = view.update(Reading(1.0, kafka({0: 0, 1: 0}, {}, swapped), None, None))

    assert events(moved, "rebalance") == [
        "group email-send-group rebalanced (partitions moved between two looks)"
    ]


# The other two groups: the API's reading the events, the worker's reading the retry topics.

API = Member("api-1f", "email-api-1", "127.0.0.1", tuple((EVENTS, p) for p in range(3)))


def test_the_events_consumer_is_the_same_partition_picture_as_the_workers() -> None:
    status = GroupReading("Stable", (API,), {(EVENTS, 0): 5, (EVENTS, 1): 3}, "range")
    events_offsets = (
        PartitionOffsets(0, 0, 7),
        PartitionOffsets(1, 0, 3),
        PartitionOffsets(2, 0, 2),
    )
    reading = kafka({0: 1}, {0: 1}, others={STATUS_GROUP: status}, offsets={EVENTS: events_offsets})

    consumer = picture().update(Reading(1.0, reading, None, None))["events_consumer"]

    assert (consumer["topic"], consumer["group"], consumer["state"]) == (
        EVENTS,
        STATUS_GROUP,
        "Stable",
    )
    assert [
        (row["partition"], row["current_offset"], row["log_end_offset"], row["lag"])
        for row in consumer["partitions"]
    ] == [(0, 5, 7, 2), (1, 3, 3, 0), (2, None, 2, None)]
    # As the worker's: a partition with nothing committed counts whole.
    assert consumer["total_lag"] == 2 + 0 + 2
    assert {row["member"]["client_id"] for row in consumer["partitions"]} == {"email-api-1"}
    assert consumer["members"] == [
        {
            "member_id": "api-1f",
            "group_instance_id": None,
            "client_id": "email-api-1",
            "host": "127.0.0.1",
            "partitions": [0, 1, 2],
        }
    ]


NOW = 1_800_000_000.0
RETRY_WORKER = Member("w-1", "email-worker-1", "127.0.0.1", ((RETRY_5M, 0), (RETRY_1M, 0)))
OLD_RETRY = "email.send.retry-2m"  # left by an earlier schedule


def retrying(due: dict[tuple[str, int], tuple[DueRecord, ...]]) -> KafkaReading:
    """email.send.retry-1m-0 holds offsets 0..11, read by the retry group up to 10; its
    partition 1 and retry-5m are empty; retry-2m (of an earlier schedule) holds one record,
    never read."""
    retry = GroupReading("Stable", (RETRY_WORKER,), {(RETRY_1M, 0): 10, (RETRY_5M, 0): 4})
    offsets = {
        RETRY_1M: (PartitionOffsets(0, 0, 12), PartitionOffsets(1, 0, 0)),
        RETRY_5M: (PartitionOffsets(0, 4, 4),),
        OLD_RETRY: (PartitionOffsets(0, 0, 1),),
    }
    return kafka({0: 0}, {}, offsets=offsets, others={RETRY_GROUP: retry}, due=due)


def test_the_retries_show_what_waits_in_each_retry_topic_and_when_it_is_due() -> None:
    due = {
        # Offset 9 was read before the group moved past it: it no longer waits.
        (RETRY_1M, 0): (DueRecord(9, NOW - 50), DueRecord(10, NOW + 43), DueRecord(11, None)),
        (OLD_RETRY, 0): (DueRecord(0, NOW + 300),),
    }

    retries = picture().update(Reading(NOW, retrying(due), None, None))["retries"]

    assert (retries["group"], retries["state"], retries["pending"]) == (RETRY_GROUP, "Stable", 3)
    assert retries["next_due_in_seconds"] == 43.0
    assert retries["next_due_at"] == "2027-01-15T08:00:43.000+00:00"
    topics = {topic["topic"]: topic for topic in retries["topics"]}
    assert list(topics) == [RETRY_1M, RETRY_5M, OLD_RETRY]  # the schedule's order first
    assert [topics[name]["in_schedule"] for name in topics] == [True, True, False]
    assert [topics[name]["pending"] for name in topics] == [2, 0, 1]
    assert [topics[name]["next_due_in_seconds"] for name in topics] == [43.0, None, 300.0]
    waiting, empty = topics[RETRY_1M]["partitions"]
    assert (waiting["current_offset"], waiting["log_end_offset"], waiting["pending"]) == (10, 12, 2)
    assert waiting["due"] == [
        {"offset": 10, "due_at": "2027-01-15T08:00:43.000+00:00", "due_in_seconds": 43.0},
        {"offset": 11, "due_at": None, "due_in_seconds": None},  # its header was unreadable
    ]
    assert waiting["member"]["client_id"] == "email-worker-1"
    assert (empty["current_offset"], empty["pending"], empty["due"], empty["member"]) == (
        None,
        0,
        [],
        None,
    )
    assert topics[OLD_RETRY]["partitions"][0]["current_offset"] is None  # never read: all waits
    assert retries["members"][0]["assigned"] == ["email.send.retry-1m-0", "email.send.retry-5m-0"]


def test_a_record_past_its_due_time_is_overdue_and_only_the_first_twenty_are_shown() -> None:
    many = tuple(DueRecord(10 + n, NOW - 5 + n) for n in range(2)) + tuple(
        DueRecord(12 + n, NOW + 60) for n in range(30)
    )
    reading = retrying({(RETRY_1M, 0): many})
    offsets = dict(reading.offsets)
    offsets[RETRY_1M] = (PartitionOffsets(0, 0, 42), PartitionOffsets(1, 0, 0))

    retries = picture().update(
        Reading(NOW, KafkaReading(offsets, reading.groups, due=reading.due), None, None)
    )["retries"]

    row = retries["topics"][0]["partitions"][0]
    assert row["pending"] == 32
    assert len(row["due"]) == 20
    assert row["next_due_in_seconds"] == -5.0  # due, and not taken yet


def test_without_kafka_the_other_groups_show_nothing() -> None:
    snapshot = picture().update(Reading(1.0, None, None, None, {"kafka": "refused"}))

    assert snapshot["events_consumer"]["partitions"] == []
    assert snapshot["events_consumer"]["total_lag"] is None
    assert snapshot["retries"]["pending"] is None
    assert snapshot["retries"]["topics"] == []


def test_a_broker_row_names_the_groups_it_coordinates() -> None:
    main = kafka({0: 0}, {}, brokers=(NODES[1], NODES[2]))
    groups = {
        GROUP: GroupReading("Stable", (), {}, coordinator=2),
        STATUS_GROUP: GroupReading("Stable", (), {}, coordinator=1),
        RETRY_GROUP: GroupReading("Empty", (), {}, coordinator=2),
    }
    reading = KafkaReading(main.offsets, groups, brokers=main.brokers)

    brokers = picture().update(Reading(1.0, reading, None, None))["brokers"]

    assert [(b["node_id"], b["coordinates"]) for b in brokers] == [
        (1, [STATUS_GROUP]),
        (2, [GROUP, RETRY_GROUP]),
    ]
