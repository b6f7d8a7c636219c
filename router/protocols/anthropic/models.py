"""Anthropic Messages: the model-list shape."""

from __future__ import annotations

import time
from typing import Any


def model_list(models: list[str]) -> dict[str, Any]:
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(0))
    data = [
        {"type": "model", "id": name, "display_name": name, "created_at": created}
        for name in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
