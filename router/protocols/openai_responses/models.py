"""The model-list shape (OpenAI's `GET /v1/models`)."""

from __future__ import annotations

from typing import Any


def model_list(models: list[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": 0, "owned_by": "router"} for m in models],
    }
