"""Operational metrics: counters every process adds to (`store`), what is counted (`record`), and the
Prometheus endpoint GET /metrics (`exposition`). See docs/backend-guide.md#metrics."""
