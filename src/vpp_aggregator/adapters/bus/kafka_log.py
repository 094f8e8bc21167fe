"""librdkafka's own log lines (connection failures and the like), once per minute per kind of
line, for every Kafka client of the process."""

from __future__ import annotations

import logging

from vpp_aggregator.log_filter import RepeatFilter

client_log = logging.getLogger("vpp_aggregator.kafka.client")
client_log.addFilter(RepeatFilter(window_s=60.0))
