"""The one kind of failure the local stack reports: a paragraph for a person, no traceback."""


class StackError(Exception):
    """Something the user can fix; the message says what was wrong and how to fix it."""
