"""The sink's HTTP side: Mailpit API v1's routes and shapes, its search and paging, the metrics it
serves, and the web inbox (inbox/, served as package data)."""
