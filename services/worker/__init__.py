"""The worker: consumes `email.send` as `email-send-group` and delivers each email over SMTP.

It commits an offset only once every record before it is finished, and never sends one
message id twice, whatever restarts or rebalances happen.
"""
