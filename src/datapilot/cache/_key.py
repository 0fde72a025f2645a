"""What a cached answer is keyed on: the question, its conversation context, and the sampling parameters.

The key has three parts, each compared differently:

* ``question``: the last user turn (or the raw prompt). Embedded; compared by cosine with the short or
  long threshold, then by the near-miss guards and the decision stage. This is what paraphrases vary.
* ``context``: everything before the last user turn (system or developer instruction, earlier turns),
  rendered as ``role: text`` lines. Two contexts match when their normalised text is identical (the
  fingerprint ``context_hash``: case, spacing and trailing punctuation do not count) or, failing that,
  when their embeddings reach the scope's ``context_threshold`` and pass the same lexical guards. So
  the same follow-up after a different conversation, or the same question under a different system
  prompt, misses; a trivially reworded system prompt still hits. Comparing the context separately
  (instead of embedding one concatenated string) keeps a long system prompt from drowning the question.
* ``params_key``: sampling parameters that change the answer (seed, max_tokens, stop, response format,
  tools, chat or completion). Compared for equality. Requests hotter than the configured temperature
  bound are not cached at all (see ``CachedLLMClient``).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import ROLES, Message

_SPACE = re.compile(r"\s+")
_TRAILING_PUNCT = re.compile(r"[\s.!?;:,~\u3002\uff01\uff1f\u2026]+$")
# CJK ideographs, kana, hangul and CJK punctuation: no spaces are written between them and Latin text
# in careful Chinese typing, and some users add them; both are the same question.
_CJK = "\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_CJK_SPACE = re.compile(rf"(?<=[{_CJK}])\s+|\s+(?=[{_CJK}])")
# Quotes, title marks (书名号) and brackets that wrap a title or a term change nothing asked.
_WRAPPERS = re.compile(
    r"[\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u300a\u300b\u3008\u3009\u300c\u300d\u300e\u300f\u3010\u3011\u2039\u203a\u00ab\u00bb]"
)
# Punctuation NFKC leaves full-width, folded to its ASCII twin.
_FOLD = str.maketrans(
    {"\u3002": ".", "\u3001": ",", "\uff61": ".", "\uff64": ",", "\u2014": "-", "\u2013": "-", "\u301c": "~"}
)
_PUNCT_RUN = re.compile(r"([!?.,;:~])[!?.,;:~]+")


@dataclass(slots=True, frozen=True)
class CacheKey:
    question: str
    context: str = ""
    params_key: str = ""

    @property
    def context_hash(self) -> str:
        return context_fingerprint(self.context)


@lru_cache(maxsize=65536)
def normalise(text: str) -> str:
    """The question as typed, without the variation of typing: Unicode NFKC (full-width letters, digits
    and punctuation become ASCII), case, quotes and title marks, spaces next to CJK text, runs of
    punctuation ("？？", "?!") and the end punctuation. Two texts equal under it are the same question:
    the cache answers them alike, whatever their embeddings say, and embeds this form."""
    text = unicodedata.normalize("NFKC", text).translate(_FOLD).lower()
    text = _WRAPPERS.sub("", text)
    text = _CJK_SPACE.sub("", _SPACE.sub(" ", text).strip())
    text = _PUNCT_RUN.sub(r"\1", text)
    return _TRAILING_PUNCT.sub("", text).strip()


def embedding_text(text: str) -> str:
    """What the cache embeds for a question or a context: its normalised lines, so that typing
    variation never moves a vector (the raw text when nothing but punctuation is left)."""
    lines = [normalise(line) for line in text.split("\n")]
    return "\n".join(line for line in lines if line) or text.strip()


def context_fingerprint(context: str) -> str:
    if not context:
        return ""
    lines = [normalise(line) for line in context.split("\n")]
    return hashlib.sha256("\n".join(line for line in lines if line).encode()).hexdigest()[:32]


def _as_message(m: Any, index: int) -> Message:
    if isinstance(m, Message):
        return m
    if not isinstance(m, dict):
        raise InvalidRequestError(f"messages[{index}] must be an object with 'role' and 'content'")
    role, content = m.get("role"), m.get("content")
    if role not in ROLES:
        raise InvalidRequestError(f"messages[{index}].role must be one of {', '.join(ROLES)}, not {role!r}")
    if not isinstance(content, str):
        raise InvalidRequestError(f"messages[{index}].content must be a string")
    return Message(role, content)


def parse_messages(messages: Any) -> list[Message]:
    """Messages from core types, OpenAI-style dicts, or a bare string (one user turn)."""
    if isinstance(messages, str):
        messages = [Message("user", messages)]
    if not isinstance(messages, Sequence) or isinstance(messages, bytes) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {role, content} objects")
    return [_as_message(m, i) for i, m in enumerate(messages)]


def _turn_text(m: Message) -> str:
    """A turn as the cache compares it: the calls an assistant made count as much as its words."""
    if not m.tool_calls:
        return m.content
    calls = " ".join(f"{c.name}({c.arguments})" for c in m.tool_calls)
    return f"{m.content} [calls: {calls}]".strip()


def key_for_messages(messages: Any, params_key: str = "") -> CacheKey:
    msgs = parse_messages(messages)
    last_user = max((i for i, m in enumerate(msgs) if m.role == "user"), default=len(msgs) - 1)
    question = msgs[last_user].content
    if not question.strip():
        raise InvalidRequestError("the last user message is empty")
    others = msgs[:last_user] + msgs[last_user + 1 :]
    context = "\n".join(f"{m.role}: {_SPACE.sub(' ', _turn_text(m)).strip()}" for m in others if _turn_text(m).strip())
    return CacheKey(question, context, params_key)


def key_for_prompt(prompt: str, params_key: str = "") -> CacheKey:
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequestError("prompt must be a non-empty string")
    return CacheKey(prompt, "", params_key)


def params_key(**params: Any) -> str:
    """A canonical string of the parameters that change an answer; ``None`` and empty values drop out."""
    kept = {k: v for k, v in sorted(params.items()) if v not in (None, [], {}, "")}
    return json.dumps(kept, sort_keys=True, separators=(",", ":")) if kept else ""
