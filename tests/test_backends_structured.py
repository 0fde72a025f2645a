"""Structured generation in the model backends.

The transformers backend enforces GBNF grammars through llguidance: a tiny random GPT-2 and a
byte-level BPE tokenizer are built here (nothing downloaded), and whatever the random model samples,
the answer must be what the grammar admits. vLLM cannot be installed here: its request mapping is a
pure function, tested against stand-ins for both generations of vLLM's parameter classes."""

from __future__ import annotations

import dataclasses
import json
import re
import types
from pathlib import Path
from typing import Any

import pytest

from datapilot.core import ModelConfig, ModelRequest, SamplingParams
from datapilot.core.errors import InvalidRequestError
from datapilot.core.types import Message, ModelOutput, ResponseFormat, ToolSpec
from datapilot.models import ModelManager, ModelState
from datapilot.models.backends._vllm_params import sampling_kwargs, structured_spec, token_logprob
from datapilot.models.structured import GRAMMAR, JSON_SCHEMA, LOGPROBS, advertised, prepare

CORPUS = [
    'hello world. the cat sat on a mat. {"name": "paris", "age": 12, "ok": true, "tags": ["a", "b"]}',
    "what is the capital of france? paris. user: assistant: [1, 2, 3] false null 0.5 -7 héllo wörld",
]
EOS = "<|endoftext|>"


def bpe_tokenizer(folder: Path) -> int:
    """A byte-level BPE tokenizer (GPT-2's kind) trained on a few lines; returns its vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS)
    fast.save_pretrained(folder)
    return len(fast)


def gpt2(folder: Path, vocab: int, *, eos_prone: bool = False) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    if eos_prone:
        # The last layer norm outputs a constant pointing at EOS's (tied) embedding: whatever the
        # context, EOS is by far the most likely next token.
        with torch.no_grad():
            eos = model.transformer.wte.weight[0]
            model.transformer.ln_f.weight.zero_()
            model.transformer.ln_f.bias.copy_(eos * (8.0 / float(eos @ eos)))
    model.save_pretrained(folder)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("llguidance")
    out = {}
    for name, prone in (("tiny", False), ("eager-eos", True)):
        folder = tmp_path_factory.mktemp(name)
        gpt2(folder, bpe_tokenizer(folder), eos_prone=prone)
        out[name] = folder
    return out


@pytest.fixture
async def manager(models: dict[str, Path], tmp_path: Path) -> Any:
    configs = [ModelConfig(name=name, backend="transformers", path=str(path)) for name, path in models.items()]
    mgr = ModelManager(configs, tmp_path)
    await mgr.start()
    for name in models:
        assert mgr.workers[name].state is ModelState.READY, mgr.workers[name].error
    yield mgr
    await mgr.close()


def sampled(seed: int, max_tokens: int = 64) -> SamplingParams:
    # Spread the seeds: torch's first draws after seeding with 0, 1, 2, ... are much alike.
    return SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed * 7919 + 17)


def test_transformers_declares_grammar_and_logprobs() -> None:
    pytest.importorskip("llguidance")
    from datapilot.models.backends.transformers import TransformersBackend
    from datapilot.models.backends.vllm import VLLMBackend

    assert {GRAMMAR, LOGPROBS} <= TransformersBackend.capabilities
    assert {"json_schema", "tools"} <= advertised(TransformersBackend.capabilities)
    assert {GRAMMAR, JSON_SCHEMA, LOGPROBS} <= VLLMBackend.capabilities


async def test_sampled_text_always_matches_the_grammar(manager: ModelManager) -> None:
    grammar = 'root ::= "hello" (" world")* "."'
    texts = set()
    for seed in range(8):
        req = ModelRequest(model="tiny", prompt="the cat sat", grammar=grammar, params=sampled(seed))
        out = await manager.generate(req)
        assert re.fullmatch(r"hello( world)*\.", out.text), out.text
        # The grammar is complete after the full stop: generation ends there, not at max_tokens.
        assert out.finish_reason == "stop" and out.usage.completion_tokens < 64
        texts.add(out.text)
    assert len(texts) > 1  # sampling really chose among the grammar's branches
    unconstrained = await manager.generate(ModelRequest(model="tiny", prompt="the cat sat", params=sampled(0, 16)))
    assert not re.fullmatch(r"hello( world)*\.", unconstrained.text)


async def test_streamed_pieces_join_to_the_generated_text(manager: ModelManager) -> None:
    grammar = 'root ::= [a-z]+ ("," [a-zé]+)* "."'
    req = ModelRequest(model="tiny", prompt="x", grammar=grammar, params=SamplingParams(max_tokens=40, seed=1))
    chunks = [c async for c in manager.stream(req)]
    text = "".join(c.text for c in chunks)
    assert text == (await manager.generate(req)).text
    assert re.fullmatch(r"[a-z]+(,[a-zé]+)*\.", text) or chunks[-1].finish_reason == "length"


async def test_eos_is_held_back_until_the_grammar_can_end(manager: ModelManager) -> None:
    greedy = SamplingParams(max_tokens=20, temperature=0)
    free = await manager.generate(ModelRequest(model="eager-eos", prompt="the cat", params=greedy))
    assert free.text == "" and free.finish_reason == "stop"  # this model ends at once when it may
    for grammar in ("root ::= [a-z] [a-z] [a-z]+", "root ::= [a-z]{3,}"):
        out = await manager.generate(ModelRequest(model="eager-eos", prompt="the cat", grammar=grammar, params=greedy))
        # At least three letters, then EOS at the first moment the grammar allows it.
        assert re.fullmatch(r"[a-z]{3,}", out.text) and out.usage.completion_tokens <= 4, out.text
        assert out.finish_reason == "stop"


SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "age": {"type": "integer"},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
    },
    "required": ["name", "age", "ok"],
}


async def test_json_schema_answers_validate(manager: ModelManager) -> None:
    import jsonschema

    fmt = ResponseFormat("json_schema", SCHEMA, "person")
    done = 0
    for seed in range(6):
        req = ModelRequest(
            model="tiny",
            messages=[Message("user", "describe paris as json")],
            response_format=fmt,
            params=sampled(seed, 200),
        )
        out = await manager.generate(req)
        if out.finish_reason == "length":
            continue
        assert out.finish_reason == "stop"
        jsonschema.validate(json.loads(out.text), SCHEMA)
        done += 1
    assert done >= 3
    any_object = ModelRequest(
        model="eager-eos", prompt="json:", response_format=ResponseFormat("json_object"), params=sampled(0, 200)
    )
    out = await manager.generate(any_object)
    assert out.finish_reason == "stop" and isinstance(json.loads(out.text), dict)


def check_logprobs(out: ModelOutput, top: int, *, eos: bool = False) -> None:
    # One entry per generated token; a closing EOS is not part of the answer and has none.
    assert out.logprobs is not None and len(out.logprobs) == out.usage.completion_tokens - eos
    for entry in out.logprobs:
        assert entry.logprob <= 0 and len(entry.top) == top
        assert all(a.logprob <= 0 for a in entry.top)
        assert [a.logprob for a in entry.top] == sorted((a.logprob for a in entry.top), reverse=True)
        assert entry.bytes is not None and entry.token == bytes(entry.bytes).decode("utf-8", "replace")
    assert b"".join(bytes(e.bytes or []) for e in out.logprobs).decode("utf-8", "replace") == out.text


async def test_logprobs_are_reported_per_token(manager: ModelManager) -> None:
    greedy = ModelRequest(
        model="tiny",
        prompt="the cat",
        params=SamplingParams(max_tokens=8, temperature=0),
        logprobs=True,
        top_logprobs=3,
    )
    out = await manager.generate(greedy)
    assert out.finish_reason == "length"
    check_logprobs(out, 3)
    assert out.logprobs is not None
    for entry in out.logprobs:  # greedy: the chosen token is the most likely one
        assert entry.token == entry.top[0].token and entry.logprob == pytest.approx(entry.top[0].logprob)
    constrained = ModelRequest(
        model="tiny",
        prompt="the cat",
        grammar='root ::= "hello" (" world")* "."',
        params=sampled(3),
        logprobs=True,
        top_logprobs=2,
    )
    out = await manager.generate(constrained)
    assert out.finish_reason == "stop"  # the grammar completed: no EOS was generated
    check_logprobs(out, 2)
    eos = await manager.generate(dataclasses.replace(greedy, model="eager-eos", grammar="root ::= [a-z] [a-z]+"))
    assert eos.finish_reason == "stop" and len(eos.text) >= 2
    check_logprobs(eos, 3, eos=True)
    plain = await manager.generate(dataclasses.replace(constrained, logprobs=False))
    assert plain.logprobs is None and plain.text == out.text


async def test_a_grammar_llguidance_cannot_read_is_a_400(manager: ModelManager) -> None:
    with pytest.raises(InvalidRequestError) as err:
        await manager.generate(ModelRequest(model="tiny", prompt="x", grammar="root ::= item\n"))
    assert err.value.param == "grammar"


async def test_without_llguidance_a_grammar_is_refused_not_ignored(
    manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datapilot.models.backends.transformers import TransformersBackend

    # What the class declares where llguidance is not installed.
    monkeypatch.setattr(TransformersBackend, "capabilities", TransformersBackend.capabilities - {GRAMMAR})
    with pytest.raises(InvalidRequestError) as err:
        await manager.generate(ModelRequest(model="tiny", prompt="x", grammar='root ::= "a"'))
    assert err.value.param == "grammar"


# vLLM: the request mapping, against stand-ins for vLLM's parameter classes.


@dataclasses.dataclass
class _Constraint:
    json: Any = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None
    json_object: bool | None = None

    def __post_init__(self) -> None:  # vLLM refuses anything but exactly one constraint
        set_ = [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]
        assert len(set_) == 1, set_


NEW_VLLM = types.SimpleNamespace(StructuredOutputsParams=_Constraint)
OLD_VLLM = types.SimpleNamespace(GuidedDecodingParams=_Constraint)


def test_vllm_mapping_without_constraints() -> None:
    req = ModelRequest(model="m", prompt="x", params=SamplingParams(max_tokens=5, temperature=0.3, top_k=0, seed=7))
    kwargs = sampling_kwargs(req, NEW_VLLM)
    assert kwargs["max_tokens"] == 5 and kwargs["top_k"] == -1 and kwargs["seed"] == 7
    assert "structured_outputs" not in kwargs and "guided_decoding" not in kwargs and "logprobs" not in kwargs
    assert structured_spec(req) is None


def test_vllm_mapping_of_schemas_grammars_and_logprobs() -> None:
    schema: dict[str, object] = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    as_schema = ModelRequest(model="m", prompt="x", response_format=ResponseFormat("json_schema", schema))
    assert sampling_kwargs(as_schema, NEW_VLLM)["structured_outputs"] == _Constraint(json=schema)
    assert sampling_kwargs(as_schema, OLD_VLLM)["guided_decoding"] == _Constraint(json=schema)
    as_object = ModelRequest(model="m", prompt="x", response_format=ResponseFormat("json_object"))
    assert sampling_kwargs(as_object, NEW_VLLM)["structured_outputs"] == _Constraint(json_object=True)
    as_grammar = ModelRequest(model="m", prompt="x", grammar='root ::= "a"', logprobs=True, top_logprobs=4)
    kwargs = sampling_kwargs(as_grammar, NEW_VLLM)
    assert kwargs["structured_outputs"] == _Constraint(grammar='root ::= "a"') and kwargs["logprobs"] == 4
    with pytest.raises(InvalidRequestError) as err:
        sampling_kwargs(as_grammar, types.SimpleNamespace())
    assert err.value.param == "grammar"


def test_vllm_gets_the_schema_where_the_layer_above_also_compiled_a_grammar() -> None:
    from datapilot.models.backends.vllm import VLLMBackend

    caps = VLLMBackend.capabilities
    schema: dict[str, object] = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    sent = prepare(
        "m", caps, ModelRequest(model="m", prompt="x", response_format=ResponseFormat("json_schema", schema))
    )
    assert structured_spec(sent) == {"json": schema}
    tool = ToolSpec("lookup", "find a city", {"type": "object", "properties": {"city": {"type": "string"}}})
    auto = prepare("m", caps, ModelRequest(model="m", messages=[Message("user", "hi")], tools=[tool]))
    spec = structured_spec(auto)
    assert spec is not None and list(spec) == ["grammar"]  # text or a call: only the grammar says both
    required = prepare(
        "m", caps, ModelRequest(model="m", messages=[Message("user", "hi")], tools=[tool], tool_choice="required")
    )
    spec = structured_spec(required)
    assert spec is not None and list(spec) == ["json"]


@dataclasses.dataclass
class _Logprob:
    logprob: float
    rank: int | None
    decoded_token: str | None


def test_vllm_logprobs_become_openai_entries() -> None:
    step = {5: _Logprob(-0.1, 1, " the"), 9: _Logprob(-2.5, 2, " a"), 3: _Logprob(-7.0, 40, "é")}
    chosen = token_logprob(step, 3, 2)
    assert (chosen.token, chosen.logprob, chosen.bytes) == ("é", -7.0, [0xC3, 0xA9])
    assert [(t.token, t.logprob) for t in chosen.top] == [(" the", -0.1), (" a", -2.5)]
    best = token_logprob({5: _Logprob(float("-inf"), 1, None)}, 5, 0)
    assert best.logprob == -9999.0 and best.token == "" and best.top == ()
