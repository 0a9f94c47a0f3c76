#!/usr/bin/env bash
# Prints the records of a topic, alone or as a member of a consumer group: Kafka's own ConsoleConsumer.
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.consumer.ConsoleConsumer "$@"
