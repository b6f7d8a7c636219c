"""The files of a config dir, by the names diagnostics and `router compile` use."""

from __future__ import annotations

PROVIDERS_FILE = "providers.yaml"
ROUTES_FILE = "routes.yaml"
PIPELINES_DIR = "pipelines"


def pipeline_file(name: str) -> str:
    """The file of pipeline `name`, relative to the config dir."""
    return f"{PIPELINES_DIR}/{name}.yaml"
