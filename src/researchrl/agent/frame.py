"""The chat template's turn wrappers, derived once by rendering probe conversations, so any template works."""

from __future__ import annotations

from dataclasses import dataclass

from researchrl.errors import UserError
from researchrl.policy.base import ChatTokenizer, Message

_A, _U = "\x00ASSISTANT\x00", "\x00OBSERVATION\x00"


@dataclass(frozen=True)
class ChatFrame:
    """Text the template puts around turns: e.g. ChatML `<|im_end|>\\n`, `<|im_start|>user\\n`, `<|im_start|>assistant\\n`."""

    eos_token: str
    assistant_open: str
    assistant_close: str
    user_open: str
    user_close: str

    def close_after(self, ended_with_eos: bool) -> str:
        """What closes a sampled assistant turn: the template's closer, minus the EOS the policy already sampled."""
        if ended_with_eos and self.assistant_close.startswith(self.eos_token):
            return self.assistant_close[len(self.eos_token) :]
        return self.assistant_close


def derive_frame(tokenizer: ChatTokenizer) -> ChatFrame:
    """Diff renderings of growing probe conversations; fails loudly if the template rewrites earlier turns."""
    base = [Message("system", "S"), Message("user", "U")]
    p0 = tokenizer.render_chat(base, None, add_generation_prompt=False)
    p1 = tokenizer.render_chat(base, None, add_generation_prompt=True)
    p2 = tokenizer.render_chat([*base, Message("assistant", _A)], None, add_generation_prompt=False)
    p3 = tokenizer.render_chat([*base, Message("assistant", _A), Message("user", _U)], None, add_generation_prompt=True)
    if not (p1.startswith(p0) and p2.startswith(p0) and p3.startswith(p2) and _A in p2 and _U in p3):
        raise UserError("this chat template rewrites earlier turns; it cannot be used for append-only multi-turn rollouts")
    assistant_open = p1[len(p0) :]
    if p2[len(p0) : p2.index(_A)] != assistant_open:
        raise UserError("this chat template opens assistant turns inconsistently")
    after_user = p3[len(p2) :]
    user_open, rest = after_user.split(_U, 1)
    if not rest.endswith(assistant_open):
        raise UserError("this chat template does not end a user turn with the assistant header")
    return ChatFrame(
        eos_token=tokenizer.eos_token,
        assistant_open=assistant_open,
        assistant_close=p2[p2.index(_A) + len(_A) :],
        user_open=user_open,
        user_close=rest[: len(rest) - len(assistant_open)],
    )
