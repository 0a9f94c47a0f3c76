"""The sink's speed paths where they stand in for a library's own steps. Every use of a library's
private names is here, in one module per library: aiosmtpd_internals, asyncio_internals."""
