#!/usr/bin/env bash
# Prints the earliest or latest offset of each partition: Kafka's own GetOffsetShell.
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.GetOffsetShell "$@"
