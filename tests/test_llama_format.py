"""The llama.cpp backend's prompt choice: a GGUF's own chat template when it has one, few-shot otherwise."""

from __future__ import annotations

from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from datapilot.core import Message, ModelConfig, ModelRequest
from datapilot.models.backends.llama_cpp import LlamaCppBackend

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def backend() -> LlamaCppBackend:
    return LlamaCppBackend(ModelConfig(name="m", backend="llama_cpp"), None)


def test_chat_template_from_the_gguf_is_used() -> None:
    b = backend()
    b._template = Jinja2ChatFormatter(template=CHATML, eos_token="<|im_end|>", bos_token="<s>")
    p = b.format(ModelRequest(model="m", messages=[Message("system", "Be brief."), Message("user", "Hi")]))
    assert p.text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert "<|im_end|>" in p.stop and not p.add_bos and not p.strip_leading_space


def test_base_model_gets_the_few_shot_dialogue() -> None:
    p = backend().format(ModelRequest(model="m", messages=[Message("user", "Hi")]))
    assert p.text.endswith("User: Hi\nAssistant:") and p.strip_leading_space


def test_completion_prompt_is_passed_as_is() -> None:
    p = backend().format(ModelRequest(model="m", prompt="1, 2, 3,"))
    assert p.text == "1, 2, 3," and p.stop == [] and p.add_bos
