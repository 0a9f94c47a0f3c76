#!/usr/bin/env bash
# Creates, lists and describes topics: Kafka's own TopicCommand.
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.TopicCommand "$@"
