"""How a batch reaches ``main``: publishing (reconcile, commit the candidate, merge and tag), data-owner approvals
and decisions, versions and diffs, and the gatekeeper's decision on merges started outside Trainyard.

Named *publishing*, not governance: rights, erasure, retention and audit are governance and live apart."""
