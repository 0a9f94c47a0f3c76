"""The SMTP sink: a local SMTP server that stores, prints and serves every message it accepts.

Its HTTP API follows Mailpit's API v1; it is the pipeline's independent witness of duplicates.

In layers: smtp/ (the SMTP server and the store), api/ (the HTTP API, search and the inbox),
simulator/ (refusals, greylisting and chaos) and fast_paths/ (the speed paths through libraries'
internals). mailbox, mime and latency are the plain records and readings they share; __main__
builds and wires them.
"""
