"""RQ's side of the drain bench: the same no-op function."""


def noop(i):
    return None
