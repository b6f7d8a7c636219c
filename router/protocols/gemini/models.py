"""The Gemini model-list shape (`models.list`)."""

from __future__ import annotations

from typing import Any


def model_list(models: list[str]) -> dict[str, Any]:
    return {
        "models": [
            {
                "name": f"models/{model}",
                "baseModelId": model,
                "version": "001",
                "displayName": model,
                "description": model,
                "supportedGenerationMethods": [
                    "generateContent",
                    "streamGenerateContent",
                    "countTokens",
                ],
            }
            for model in models
        ]
    }
