"""Interfaces to the outside world (artifact storage, Kubernetes), with their implementations."""
