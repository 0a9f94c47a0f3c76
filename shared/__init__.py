"""What the services truly share: settings, the wire schema and Kafka client helpers."""
