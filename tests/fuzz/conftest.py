"""Hypothesis profiles: ``ci`` (the default, run by ``make test``) and ``fuzz`` (``make fuzz``, 10,000+ cases).

Pick one with ``HYPOTHESIS_PROFILE``. The domain is built once per test
function (a function-scoped fixture, hence the suppressed health check),
not once per example: examples only send frames and never write.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

COMMON = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "print_blob": True,
}

# Three strategies (JSON values, strings, protocol dicts): 300 examples each in CI.
settings.register_profile("ci", max_examples=300, **COMMON)
# 3,400 examples each: 10,200 cases in all.
settings.register_profile("fuzz", max_examples=3400, **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
