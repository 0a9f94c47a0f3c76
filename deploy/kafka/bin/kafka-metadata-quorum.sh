#!/usr/bin/env bash
# Describes the KRaft controller quorum (leader, voters, their lag): Kafka's own MetadataQuorumCommand.
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.MetadataQuorumCommand "$@"
