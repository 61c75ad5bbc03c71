import os

from hypothesis import HealthCheck, settings

# Derandomised in CI so a run is reproducible; torch's first calls are slow, hence no deadline.
settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")
