"""The error of the resident-cache rewrites (``slmc.schedules.resident_kv``, ``slmc.schedules.last_position``)."""


class NotResident(Exception):
    """The graph's use of the cache (or its LM head) is not the pattern the rewrite handles; the message says
    where. Not a user error: the artifact keeps the copy contract (or ``resident_all`` alone) and records why."""
