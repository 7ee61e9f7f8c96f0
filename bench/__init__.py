"""Side-by-side fan-out benchmark of drf-live, djangochannelsrestframework, plain Channels and raw websockets.

Run it with ``make bench`` (full size, writes docs/benchmarks.md) or
``python -m bench --help``. Every process it starts listens on 127.0.0.1 only.
"""
