"""The web page inside `stylebox run`: queue, live progress, gallery, failures, presets, actions,
/api/status, /metrics and /healthz. It reads what the service writes and never reaches into the
engine: a page being looked at must not slow the worker."""
