"""ChatTokenizer adapters: a transformers tokenizer, and a byte-level one for text-only (chat API) policies and tests."""

from __future__ import annotations

from typing import Any

from researchrl.policy.base import Message
from researchrl.prompts import tools_block


def load_tokenizer(name: str) -> Any:
    """A transformers tokenizer by path, hub id or "embedded"; offline, so a missing one is a one-line UserError."""
    from transformers import AutoTokenizer

    from researchrl.policy.embedded import from_pretrained

    return from_pretrained(AutoTokenizer, name, what="tokenizer")


class HFChatTokenizer:
    """A transformers tokenizer; templates without tool support get the Qwen2.5 tool block in the system text."""

    def __init__(self, tokenizer: Any):
        self.hf = tokenizer
        self.eos_token: str = tokenizer.eos_token
        self.eos_token_id: int = tokenizer.eos_token_id
        self.pad_token_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.template_has_tools = "tools" in (tokenizer.chat_template or "")

    def encode(self, text: str, trusted: bool) -> list[int]:
        """Ids without BOS/EOS; untrusted text is split so '<|im_end|>' in a web page stays plain text."""
        return self.hf(text, add_special_tokens=False, split_special_tokens=not trusted)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        """Text with special tokens kept, as the parser and reward expect."""
        return self.hf.decode(ids, skip_special_tokens=False)

    def render_chat(self, messages: list[Message], tools: list[dict] | None, add_generation_prompt: bool) -> str:
        """Apply the model's own chat template."""
        rows = [{"role": m.role, "content": m.content} for m in messages]
        if tools and self.template_has_tools:
            return self.hf.apply_chat_template(rows, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt)
        if tools and rows and rows[0]["role"] == "system":
            rows[0] = {"role": "system", "content": rows[0]["content"] + tools_block(tools)}
        return self.hf.apply_chat_template(rows, tokenize=False, add_generation_prompt=add_generation_prompt)


class ByteChatTokenizer:
    """UTF-8 bytes as tokens with a ChatML frame: exact and dependency-free, for chat endpoints and tests."""

    eos_token = "<|im_end|>"
    SPECIALS = ("<|im_start|>", "<|im_end|>")

    def encode(self, text: str, trusted: bool) -> list[int]:
        """Bytes are ids 0-255; the two ChatML markers are ids 256/257 only in trusted text."""
        ids: list[int] = []
        rest = text
        while rest:
            hits = [(rest.find(s), n) for n, s in enumerate(self.SPECIALS) if trusted and s in rest]
            if not hits:
                return ids + list(rest.encode("utf-8"))
            pos, n = min(hits)
            ids += list(rest[:pos].encode("utf-8")) + [256 + n]
            rest = rest[pos + len(self.SPECIALS[n]) :]
        return ids

    def decode(self, ids: list[int]) -> str:
        """Inverse of encode (invalid UTF-8 replaced)."""
        out, buf = [], bytearray()
        for i in ids:
            if i >= 256:
                out.append(buf.decode("utf-8", "replace") + self.SPECIALS[i - 256])
                buf = bytearray()
            else:
                buf.append(i)
        return "".join(out) + buf.decode("utf-8", "replace")

    @property
    def eos_token_id(self) -> int:
        """Id of <|im_end|>."""
        return 257

    def render_chat(self, messages: list[Message], tools: list[dict] | None, add_generation_prompt: bool) -> str:
        """ChatML, Qwen-style tool block in the system turn."""
        parts = []
        for i, m in enumerate(messages):
            content = m.content + (tools_block(tools) if tools and i == 0 and m.role == "system" else "")
            parts.append(f"<|im_start|>{m.role}\n{content}<|im_end|>\n")
        return "".join(parts) + ("<|im_start|>assistant\n" if add_generation_prompt else "")
