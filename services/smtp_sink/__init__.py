"""The SMTP sink: a local SMTP server that stores, prints and serves every message it accepts.

Its HTTP API follows Mailpit's API v1; it is the pipeline's independent witness of duplicates.
"""
