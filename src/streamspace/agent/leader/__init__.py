"""Leader election for replicas of one agent identity (``LEADER_ELECTION=redis|file``).

:mod:`.base` is the lease contract and the term, :mod:`.redis` and :mod:`.file` are its
backends, :mod:`.election` the loop that campaigns, serves and steps down.
"""
