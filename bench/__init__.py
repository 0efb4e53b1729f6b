"""Benchmarks of the control plane (see bench/README.md); not part of the installed package."""
