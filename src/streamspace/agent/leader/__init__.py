"""Leader election for replicas of one agent identity
(``LEADER_ELECTION=redis|file|kubernetes``).

:mod:`.base` is the lease contract and the term, :mod:`.redis`, :mod:`.file` and
:mod:`.kubernetes` (a ``coordination.k8s.io/v1`` Lease) are its backends, :mod:`.election`
the loop that campaigns, serves and steps down.
"""
