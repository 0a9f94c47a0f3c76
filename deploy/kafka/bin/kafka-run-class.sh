#!/usr/bin/env bash
# Runs one of Kafka's own Java classes from the jars that `make kafka-fetch` gathered,
# like bin/kafka-run-class.sh in Kafka's release tarball: kafka-run-class.sh CLASS [ARGS...]
set -euo pipefail

kafka_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project_dir="$(cd "$kafka_dir/../.." && pwd)"
libs_dir="${KAFKA_LIBS_DIR:-.cache/kafka/libs}"
[[ "$libs_dir" = /* ]] || libs_dir="$project_dir/$libs_dir"

if [[ $# -lt 1 ]]; then
  echo "usage: $(basename "$0") CLASS [ARGS...]" >&2
  exit 2
fi
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
  java="$JAVA_HOME/bin/java"
elif command -v java >/dev/null 2>&1; then
  java="java"
else
  echo "error: Java was not found: Kafka's tools are Java programs. Install a JDK 17 or newer" \
       "(Debian/Ubuntu: sudo apt-get install openjdk-17-jdk-headless; macOS: brew install" \
       "openjdk@17) or set JAVA_HOME, then run the command again." >&2
  exit 1
fi
if ! compgen -G "$libs_dir/kafka-tools-*.jar" >/dev/null; then
  echo "error: Kafka's jars are not in $libs_dir yet. Fetch them once with 'make kafka-fetch'" \
       "(or start everything with 'make up'), then run the command again." >&2
  exit 1
fi

# Short-lived tools start faster with the client compiler and the serial collector.
# KAFKA_HEAP_OPTS and KAFKA_OPTS work as they do with Kafka's own scripts.
exec "$java" ${KAFKA_HEAP_OPTS:--Xmx256m} -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
  -Djava.awt.headless=true \
  "-Dlog4j2.configurationFile=$kafka_dir/tools-log4j2.yaml" \
  ${KAFKA_OPTS:-} \
  -cp "$libs_dir/*" "$@"
