"""What OpenAI's API takes of which model, shared by the two OpenAI protocol packages
(Chat and Responses speak to the same servers and meet the same rules):

* reasoning models (o1, o3, o4, gpt-5...) reject `max_tokens`;
* models without reasoning (gpt-4*, gpt-3.5*, chatgpt-*) reject any reasoning setting
  (`reasoning_effort`, `reasoning`, `include: [reasoning.encrypted_content]`);
* `user` is capped at 64 characters (Claude Code sends about 150).

A rule that refuses a field makes the builder leave it out and name it in the request's
`dropped` (`x-router-dropped`), or refuse it in strict mode."""

from __future__ import annotations

USER_MAX_CHARS = 64


def model_name(model: str) -> str:
    """`openai/gpt-4o` and `GPT-4o` -> `gpt-4o`."""
    return model.rsplit("/", 1)[-1].lower()


def is_reasoning_model(model: str) -> bool:
    """OpenAI reasoning models: they reject `max_tokens`."""
    return model_name(model).startswith(("o1", "o3", "o4", "gpt-5"))


def takes_reasoning(model: str) -> bool:
    """False for the OpenAI models known to reject every reasoning setting."""
    return not model_name(model).startswith(("gpt-4", "gpt-3.5", "chatgpt-"))


def user_fits(user: str) -> bool:
    return len(user) <= USER_MAX_CHARS
