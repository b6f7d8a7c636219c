"""The operator plane's input: one immutable `Outcome` per client request (outcome.py),
handed to every subscribed sink (sinks.py) after the request's last byte."""
