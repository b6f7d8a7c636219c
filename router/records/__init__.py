"""The operator plane's input: one immutable `Outcome` per client request, published to
the subscribed sinks after the request's last byte (outcome.py); the sinks (failures.py,
jsonlines.py) take it from there, off the hot path."""
