"""What makes the sink a relay in trouble on request: recipients and messages refused with 4xx or
5xx, greylisting, and Mailpit's chaos triggers."""
