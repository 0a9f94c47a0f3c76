"""How the stack runs: Kafka from Maven Central and local background processes (`deploy.local`)."""
