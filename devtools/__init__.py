"""Tools for working on this repository (its tests and benchmarks); not part of the drf-live package."""
