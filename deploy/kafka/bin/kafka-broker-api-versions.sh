#!/usr/bin/env bash
# Asks a broker which API versions it speaks (it exits 0 even when it fails).
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
