"""What makes the sink a relay in trouble on request: the simulator addresses, whose replies are
fixed; recipients and messages refused with 4xx or 5xx; greylisting; a rate limit; and Mailpit's
chaos triggers."""
