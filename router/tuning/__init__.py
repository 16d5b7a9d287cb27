"""Offline tuning and analysis: threshold sweeps, ``hybridgate tune`` (retune) and the router
benchmark. Nothing on the request path imports this package."""
