"""Tools for GPU nodes: ``doctor`` (what works here), ``wheelhouse`` (offline installs) and ``selftest`` (GPU claims checked in one run)."""
