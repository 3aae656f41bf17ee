"""Memory known before work: each stage's peak predicted from the config, with no weights
loaded (``predict``: the job's own code run on the meta device), checked against live tensor
bytes measured on the CPU (``measure``), judged against a device (``devices``, ``advice``),
and printed by ``layerprune-memory`` (``cli``). The job's preflight stops a job that cannot
fit before it loads anything (``preflight.check_memory``)."""
