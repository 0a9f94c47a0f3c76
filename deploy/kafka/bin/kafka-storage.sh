#!/usr/bin/env bash
# Formats a KRaft data directory: Kafka's own StorageTool (deploy.local runs it for you).
exec "$(dirname "${BASH_SOURCE[0]}")/kafka-run-class.sh" kafka.tools.StorageTool "$@"
