"""A StatsD client that fails on the provider's metrics, set as ``[metrics] statsd_custom_client_path`` in tests."""

from __future__ import annotations

from statsd import StatsClient


class RaisingStatsClient(StatsClient):
    """
    What a broken metrics backend looks like to the operator: each ``gravity.*`` metric raises. Airflow's own
    metrics pass, since Airflow does not guard its own calls and the run would not get to the operator.
    """

    def _send(self, data: str) -> None:
        if ".gravity." in data or data.startswith("gravity."):
            raise OSError("the metrics backend is broken")
        super()._send(data)
