"""`make demo`: placeholder replaced below."""

from shared.settings import Settings


def run(settings: Settings) -> None:
    raise NotImplementedError
