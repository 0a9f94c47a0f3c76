"""The sink's SMTP side: the aiosmtpd session and handler, TLS and AUTH, the printed log, and the
SQLite store that has every message before the sink answers 250 for it."""
