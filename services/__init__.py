"""The pipeline's services: api, worker, smtp_sink and console, each `python -m services.NAME`."""
