"""The HTTP API: `POST /emails` validates a request and produces it to `email.send`.

It answers 202 only after Kafka acknowledged the record (acks=all), with its partition and offset.
"""
