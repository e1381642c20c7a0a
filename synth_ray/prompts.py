"""Every prompt text of the study in one place (generation now; judges join them here)."""

from __future__ import annotations

from typing import Literal

CONTEXT_HEADER = "CONTEXT:"


def user_turn(instruction: str, context: str = "") -> str:
    """The user turn of a Dolly row (PAPER.md, Data): the instruction, and where the row has
    context, a blank line, a `CONTEXT:` header line, and the context."""
    if context and context.strip():
        return f"{instruction}\n\n{CONTEXT_HEADER}\n{context}"
    return instruction


def chat_messages(
    instruction: str,
    context: str,
    system_prompt: str | None,
    system_turn: Literal["system", "fold"] = "system",
) -> list[dict[str, str]]:
    """Chat messages for a source model.

    Some models (e.g. Gemma-2) accept no system turn; for those (`system_turn="fold"`) the
    system prompt is put in front of the user turn, separated by a blank line.
    """
    user = user_turn(instruction, context)
    if not system_prompt:
        return [{"role": "user", "content": user}]
    if system_turn == "fold":
        return [{"role": "user", "content": f"{system_prompt}\n\n{user}"}]
    return [{"role": "system", "content": system_prompt}, {"role": "user", "content": user}]
