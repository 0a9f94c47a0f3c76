"""`make chaos`: the delivery guarantees under restarts, crashes and outages, with the evidence."""
