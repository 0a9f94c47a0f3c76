#!/usr/bin/env bash
# Lists consumer groups and describes their offsets (CURRENT-OFFSET, LOG-END-OFFSET, LAG).
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.consumer.group.ConsumerGroupCommand "$@"
