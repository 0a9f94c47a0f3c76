#!/usr/bin/env bash
# Reads lines from standard input and produces each as a record: Kafka's own ConsoleProducer.
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.ConsoleProducer "$@"
