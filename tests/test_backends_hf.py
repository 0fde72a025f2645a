"""The transformers and cross-encoder backends on tiny models built here with random weights (the
real loading code, nothing downloaded), the embedding-similarity reranker on MiniLM, and vLLM's
clear absence on a CPU machine."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from datapilot.core import Message, ModelConfig, ModelRequest, SamplingParams
from datapilot.core.errors import ContextLengthExceededError, ModelNotReadyError
from datapilot.models import ModelManager, ModelState
from tests.conftest import EMBED_MODEL, Server

WORDS = "hello world the cat sat on a mat dog ran in park what is capital of france paris user assistant"


def tiny_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>"]
    tok.train_from_iterator([WORDS + " : ? ."], trainers.WordLevelTrainer(special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="$A",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        eos_token="</s>",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tiny_tokenizer(folder)
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(vocab_size=40, n_positions=256, n_embd=32, n_layer=2, n_head=2, bos_token_id=4, eos_token_id=4)
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-ce")
    tiny_tokenizer(folder)
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=1,
    )
    BertForSequenceClassification(cfg).save_pretrained(folder)
    return folder


async def test_transformers_backend_generates_and_streams(tiny_gpt2: Path, tmp_path: Path) -> None:
    mgr = ModelManager([ModelConfig(name="tiny", backend="transformers", path=str(tiny_gpt2))], tmp_path)
    await mgr.start()
    assert mgr.workers["tiny"].state is ModelState.READY, mgr.workers["tiny"].error
    req = ModelRequest(model="tiny", prompt="hello world", params=SamplingParams(max_tokens=6, temperature=0))
    out = await mgr.generate(req)
    assert out.usage.prompt_tokens == 2 and out.usage.completion_tokens == 6 and out.finish_reason == "length"
    chunks = [c async for c in mgr.stream(req)]
    assert "".join(c.text for c in chunks) == out.text  # greedy: the same text streamed
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    seeded = ModelRequest(model="tiny", prompt="the cat", params=SamplingParams(max_tokens=8, temperature=1.0, seed=3))
    assert (await mgr.generate(seeded)).text == (await mgr.generate(seeded)).text
    chat = ModelRequest(
        model="tiny",
        messages=[Message("user", "what is the capital of france ?")],
        params=SamplingParams(max_tokens=4, temperature=0),
    )
    assert (await mgr.generate(chat)).usage.prompt_tokens > 20  # the few-shot dialogue, no template here
    with pytest.raises(ContextLengthExceededError):
        await mgr.generate(ModelRequest(model="tiny", prompt="hello", params=SamplingParams(max_tokens=500)))
    await mgr.close()


async def test_transformers_logprobs_and_a_tokenizer_llguidance_cannot_read(tiny_gpt2: Path, tmp_path: Path) -> None:
    """A word-level tokenizer has no token bytes for llguidance: logprobs still come (as decoded text),
    a grammar is a 400 naming ``grammar`` rather than unconstrained text."""
    from datapilot.core.errors import InvalidRequestError

    mgr = ModelManager([ModelConfig(name="tiny", backend="transformers", path=str(tiny_gpt2))], tmp_path)
    await mgr.start()
    params = SamplingParams(max_tokens=4, temperature=0)
    out = await mgr.generate(ModelRequest(model="tiny", prompt="hello world", params=params, logprobs=True))
    assert out.logprobs is not None and len(out.logprobs) == 4 and all(e.logprob <= 0 for e in out.logprobs)
    if "grammar" in mgr.workers["tiny"].info().capabilities:  # llguidance installed
        with pytest.raises(InvalidRequestError, match="tokenizer cannot be used") as err:
            await mgr.generate(ModelRequest(model="tiny", prompt="hello", grammar='root ::= "the cat"', params=params))
        assert err.value.param == "grammar"
    await mgr.close()


async def test_cross_encoder_reranks(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    mgr = ModelManager([ModelConfig(name="ce", backend="cross_encoder", path=str(tiny_cross_encoder))], tmp_path)
    await mgr.start()
    assert mgr.workers["ce"].state is ModelState.READY, mgr.workers["ce"].error
    docs = ["the cat sat on a mat", "dog ran in park", "paris"]
    out = await mgr.rerank("ce", "where is the cat", docs)
    assert len(out.scores) == 3 and len(set(out.scores)) == 3 and out.usage.prompt_tokens > 0
    assert (await mgr.rerank("ce", "where is the cat", docs)).scores == out.scores
    await mgr.close()


async def test_vllm_absent_is_a_clear_load_error(tmp_path: Path) -> None:
    mgr = ModelManager([ModelConfig(name="big", backend="vllm", path=str(tmp_path))], tmp_path)
    await mgr.start()
    worker = mgr.workers["big"]
    assert worker.state is ModelState.FAILED
    assert "datapilot[vllm]" in (worker.error or "")
    with pytest.raises(ModelNotReadyError, match="datapilot\\[vllm\\]"):
        await mgr.generate(ModelRequest(model="big", prompt="x"))


def test_rerank_endpoint_cohere_shape(server: Server) -> None:
    docs = ["Paris is the capital of France.", "Bananas are yellow.", {"text": "France's capital city is Paris."}]
    resp = httpx.post(
        f"{server.v1}/rerank",
        timeout=30,
        json={"model": EMBED_MODEL, "query": "What is the capital of France?", "documents": docs, "top_n": 2},
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert [r["index"] for r in body["results"]] in ([0, 2], [2, 0])
    assert body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    assert body["results"][0]["document"]["text"] in (docs[0], docs[2]["text"])  # type: ignore[index]
    assert body["usage"]["total_tokens"] > 0
    bad = httpx.post(f"{server.v1}/rerank", json={"model": EMBED_MODEL, "query": "q", "documents": []})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "documents"
    unsupported = httpx.post(f"{server.v1}/rerank", json={"model": "gemma-3-270m", "query": "q", "documents": ["d"]})
    assert unsupported.status_code == 400 and "does not support rerank" in unsupported.json()["error"]["message"]


async def test_a_cross_encoder_folder_as_the_cache_reranker(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    """Kind ``cross_encoder``: the folder is loaded in-process (offline) on the first candidate; its
    sigmoid score decides against the configured threshold."""
    from datapilot.cache import HashEmbedder, SemanticCache
    from datapilot.core.config import CacheSettings

    for threshold, hit in ((0.0, True), (1.0, False)):
        settings = CacheSettings.model_validate(
            {
                "embedders": {"default": {"kind": "hash"}},
                "rerankers": {"ce": {"kind": "cross_encoder", "path": str(tiny_cross_encoder), "threshold": threshold}},
                "defaults": {"threshold_short": 0.5, "margin": 0.0, "reranker": "ce"},
            }
        )
        async with SemanticCache(settings, tmp_path / str(threshold), embedders={"default": HashEmbedder()}) as cache:
            await cache.insert("m", "where is the cat", "on the mat")
            result = await cache.query("m", "where is the cat now")
            assert result.hit is hit and result.reason == ("hit" if hit else "reranker")
    missing = CacheSettings.model_validate(
        {
            "embedders": {"default": {"kind": "hash"}},
            "rerankers": {"ce": {"kind": "cross_encoder", "path": str(tmp_path / "absent")}},
            "defaults": {"threshold_short": 0.5, "margin": 0.0, "reranker": "ce"},
        }
    )
    async with SemanticCache(missing, tmp_path / "absent-home", embedders={"default": HashEmbedder()}) as cache:
        await cache.insert("m", "where is the cat", "on the mat")
        with pytest.raises(ModelNotReadyError, match="reranker folder not found"):
            await cache.query("m", "where is the cat now")


def _pairs(n: int) -> list[tuple[str, str, int]]:
    """Same question when both sides are about the cat; different when one is about the dog."""
    words = "the sat on a mat ran in park what is".split()
    out = []
    for i in range(n):
        a = " ".join(words[(i + k) % len(words)] for k in range(4))
        b = " ".join(words[(i * 3 + k) % len(words)] for k in range(3))
        out.append((f"{a} cat", f"{b} {'cat' if i % 2 else 'dog'}", i % 2))
    return out


def test_train_reranker_learns_and_the_cache_loads_it(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    from datapilot.cache import CrossEncoderReranker
    from datapilot.cache._train import train_reranker

    steps_seen: list[int] = []
    report = train_reranker(
        _pairs(60),
        tmp_path / "ce",
        base=tiny_cross_encoder,
        epochs=12,
        batch_size=8,
        learning_rate=3e-3,
        holdout=0.2,
        progress=lambda step, steps, loss: steps_seen.append(step),
    )
    assert (report.train_pairs, report.holdout_pairs, report.steps) == (48, 12, 12 * 6)
    assert steps_seen == list(range(1, 73))
    assert report.holdout_auc == 1.0 and report.holdout_accuracy == 1.0 and report.final_loss < 0.5
    assert (tmp_path / "ce" / "datapilot_reranker.json").is_file()
    reranker = CrossEncoderReranker(str(tmp_path / "ce"), 0.5)
    same, other = asyncio.run(reranker.score("the sat on a cat", ["mat ran in cat", "mat ran in dog"]))
    assert 0.5 < same < 1.0 and 0.0 < other < 0.5


def test_train_reranker_command(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    import gzip
    import json

    from typer.testing import CliRunner

    from datapilot.cli import app

    data = tmp_path / "pairs.jsonl.gz"
    with gzip.open(data, "wt") as f:
        for a, b, label in _pairs(30):
            f.write(json.dumps({"a": a, "b": b, "label": label}) + "\n")
    args = ["cache", "train-reranker", "--data", str(data), "--base", str(tiny_cross_encoder), "--batch-size", "8"]
    done = CliRunner().invoke(app, [*args, "--skip", "10", "--out", str(tmp_path / "ce"), "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["train_pairs"] + report["holdout_pairs"] == 20 and report["steps"] == 3
    assert (tmp_path / "ce" / "config.json").is_file()
    shown = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ce2"), "--holdout", "0.2"])
    assert shown.exit_code == 0, shown.output
    assert "held-out 6 pairs: accuracy" in shown.stdout and "use it: [cache.rerankers.NAME]" in shown.stdout
    one_label = tmp_path / "ones.jsonl"
    one_label.write_text(json.dumps({"a": "the cat", "b": "a cat", "label": 1}) * 1 + "\n")
    bad = CliRunner().invoke(app, ["cache", "train-reranker", "--data", str(one_label), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "needs at least two labelled pairs" in str(bad.exception)
    assert not (tmp_path / "x").exists()
