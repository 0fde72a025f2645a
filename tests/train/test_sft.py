"""Fine-tuning, DB-GPT-Hub's way: a tiny randomly initialised model trains end to end in seconds
(preprocess -> start_sft -> start_predict -> start_evaluate, checkpoints and resume), arguments are
checked before anything loads, and the shared-prefix batching computes the very loss of a plain pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from datapilot.core.errors import InvalidRequestError
from datapilot.datasource import build_sample_database
from datapilot.train import preprocess_sft_data, start_evaluate, start_predict, start_sft
from datapilot.train._sft import Sample, batch_loss, render

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

QUESTIONS = [
    ("How many customers are there?", "SELECT COUNT(*) FROM customers"),
    ("How many products are there?", "SELECT COUNT(*) FROM products"),
    ("List the names of the regions.", "SELECT name FROM regions"),
    ("What is the average salary of employees?", "SELECT AVG(salary) FROM employees"),
    ("Which products are in the Dairy category?", "SELECT name FROM products WHERE category = 'Dairy'"),
    ("How many orders were cancelled?", "SELECT COUNT(*) FROM orders WHERE status = 'cancelled'"),
]


@pytest.fixture(scope="module")
def spider(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Spider-format folder over the sample database: train, dev, tables.json, database/."""
    root = tmp_path_factory.mktemp("spider")
    src = root / "shop"
    db = build_sample_database(src / "database" / "sample" / "sample.sqlite")
    items = [{"db_id": "sample", "question": q, "query": s} for q, s in QUESTIONS]
    (src / "train.json").write_text(json.dumps(items))
    (src / "dev.json").write_text(json.dumps(items[:3]))
    (src / "tables.json").write_text("[]")
    (src / "gold.txt").write_text("".join(f"{s}\tsample\n" for _, s in QUESTIONS[:3]))
    assert db.is_file()
    return root


@pytest.fixture(scope="module")
def records(spider: Path) -> dict[str, Path]:
    info = [{"data_source": "shop", "train_file": ["train.json"], "dev_file": ["dev.json"], "train_output": "t.json"}]
    return preprocess_sft_data(spider, info)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, records: dict[str, Path]) -> Path:
    """A randomly initialised 2-layer LLaMA with a byte-level BPE tokenizer trained on the records."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny")
    texts = [r["instruction"] + r["input"] + r["output"] for r in json.loads(records["train"].read_text())]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=fast.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_preprocess_writes_the_pipelines_prompts(spider: Path, records: dict[str, Path]) -> None:
    train = json.loads(records["train"].read_text())
    assert len(train) == len(QUESTIONS) and len(json.loads(records["dev"].read_text())) == 3
    assert json.loads(records["t.json"].read_text()) == train  # the entry's own train_output
    first = train[0]
    assert set(first) == {"db_id", "instruction", "input", "output", "history"}
    assert "CREATE TABLE customers" in first["instruction"]
    assert "e.g." not in first["instruction"]  # the trained prompt shows no sample values ...
    assert first["instruction"].count("-- Question:") == 0  # ... and no worked examples
    assert first["input"] == "-- Question: How many customers are there?\nSELECT"
    dairy = next(r for r in train if "Dairy" in r["input"])
    assert "products.category = 'Dairy'" in dairy["input"]  # the value hint, as the pipeline writes it
    assert len({r["instruction"] for r in train}) == 1  # one schema preamble: batches share it
    assert json.loads((spider / "dataset_info.json").read_text())["example_text2sql_train"]


def test_the_template_continues_the_prompts_select() -> None:
    record = {"instruction": "x\n", "input": "-- Question: q\nSELECT", "output": "SELECT a FROM t"}
    prompt, target = render("datapilot", record)
    assert prompt.endswith("SELECT") and target == " a FROM t;"
    prompt, target = render("chatml", {"instruction": "i ", "input": "q", "output": "SELECT 1"})
    assert prompt.startswith("<|im_start|>user") and target == "SELECT 1<|im_end|>"


def test_a_tiny_model_trains_predicts_and_is_scored(
    spider: Path, records: dict[str, Path], tiny_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "adapter"
    args: dict[str, Any] = {
        "model_name_or_path": str(tiny_model),
        "dataset": "example_text2sql_train",
        "dataset_dir": str(spider),
        "finetuning_type": "lora",
        # A random model's output layer knows nothing: adapt it too, or LoRA learns too slowly to see.
        "lora_target": "q_proj,v_proj,o_proj,gate_proj,down_proj,lm_head",
        "lora_rank": 16,
        "lora_alpha": 32,
        "template": "datapilot",
        "per_device_train_batch_size": 3,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-3,
        "lr_scheduler_type": "constant",
        "max_steps": 20,
        "logging_steps": 2,
        "save_steps": 8,
        "output_dir": str(out),
        "plot_loss": True,
        "overwrite_output_dir": True,
    }
    seen: list[int] = []
    result = start_sft(args, progress=lambda step, total, loss: seen.append(step))
    assert seen == list(range(1, 21)) and result.steps == 20 and result.samples == 60
    assert result.last_loss is not None and result.first_loss is not None
    assert result.last_loss < result.first_loss * 0.5  # the loss falls
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_log.jsonl", "training_loss.png"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint-8").is_dir() and (out / "checkpoint-16").is_dir()
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert log[-1]["current_steps"] == 20 and log[0]["loss"] > log[-1]["loss"]
    assert result.adapter_gguf is None  # a Hugging Face base has no GGUF to adapt

    predict = {
        "model_name_or_path": str(tiny_model),
        "template": "datapilot",
        "predict_file_path": str(records["dev"]),
        "predict_out_dir": str(tmp_path),
        "max_new_tokens": 24,
    }
    before = start_predict({**predict, "predicted_out_filename": "base.sql"}).read_text().splitlines()
    after_path = start_predict({**predict, "checkpoint_dir": str(out), "predicted_out_filename": "tuned.sql"})
    after = after_path.read_text().splitlines()
    assert len(after) == len(before) == 3
    assert after != before  # the adapter changes what the model writes

    scores = start_evaluate(
        {"input": str(after_path), "gold": str(spider / "shop" / "gold.txt"), "db": str(spider / "shop" / "database"),
         "etype": "exec", "keep_distict": False, "plug_value": True, "progress_bar_for_each_datapoint": False}
    )  # fmt: skip
    assert scores["exec"]["all"]["count"] == 3
    assert scores["exec"]["all"]["correct"] == sum(bool(item["exec"]) for item in scores["items"])

    # Resume: from the last checkpoint (step 16) to 24 steps, not from the start.
    resumed = start_sft({**args, "max_steps": 24, "overwrite_output_dir": False, "resume_from_checkpoint": True})
    assert resumed.steps == 24 and resumed.samples == (24 - 16) * 3


def test_the_shared_prefix_gives_the_loss_of_a_plain_pass(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.eval()
    prefix, rest_a, rest_b = list(range(5, 40)), [41, 42, 43, 44, 45], [46, 47, 48]
    shared = [Sample(prefix, rest_a, 2), Sample(prefix, rest_b, 1)]
    plain = [Sample([], prefix + rest_a, len(prefix) + 2), Sample([], prefix + rest_b, len(prefix) + 1)]
    with torch.no_grad():
        a = batch_loss(model, shared, pad_id=0)
        b = batch_loss(model, plain, pad_id=0)
    assert abs(float(a) - float(b)) < 1e-4


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"lora_dropuot": 0.1}, "lora_dropuot"),
        ({"finetuning_type": "prefix"}, "finetuning_type"),
        ({"finetuning_type": "qlora"}, "qlora"),
        ({"template": "vicuna"}, "template"),
        ({"learning_rate": "fast"}, "learning_rate"),
        ({"dataset": "no_such_set"}, "no_such_set"),
        ({"output_dir": ""}, "output_dir"),
        ({"num_train_epochs": 0}, "num_train_epochs"),
    ],
)
def test_bad_arguments_fail_before_any_training(
    spider: Path, records: dict[str, Path], tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    args: dict[str, Any] = {
        "model_name_or_path": "/nonexistent/model",  # never reached: the arguments fail first
        "dataset": "example_text2sql_train",
        "dataset_dir": str(spider),
        "output_dir": str(tmp_path / "out"),
        **change,
    }
    with pytest.raises(InvalidRequestError, match=named):
        start_sft(args)
    assert not (tmp_path / "out").exists()


def test_an_occupied_output_dir_is_refused(spider: Path, records: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(InvalidRequestError, match="overwrite_output_dir"):
        start_sft({"model_name_or_path": "x/y", "dataset": str(records["train"]), "output_dir": str(tmp_path / "out")})


def test_preprocess_and_predict_refuse_bad_input(spider: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="natsql"):
        start_evaluate({"input": "a", "gold": "b", "natsql": True})
    with pytest.raises(InvalidRequestError, match="data_source"):
        preprocess_sft_data(spider, [{"train_file": ["train.json"]}])
    with pytest.raises(InvalidRequestError, match="tables_file"):
        preprocess_sft_data(spider, [{"data_source": "missing", "train_file": ["train.json"]}])
    with pytest.raises(InvalidRequestError, match="is_multiple_turn"):
        preprocess_sft_data(spider, [{"data_source": "shop", "train_file": ["train.json"], "is_multiple_turn": True}])
    with pytest.raises(InvalidRequestError, match="predict_file_path"):
        start_predict({"model_name_or_path": "x", "predict_file_path": str(tmp_path / "none.json")})


def test_instruction_data_trains_through_the_cli(tiny_model: Path, tmp_path: Path) -> None:
    """``--task instruct``: Text2API-style pairs as plain instruction data, with the default template."""
    from typer.testing import CliRunner

    from datapilot.cli.main import app

    pairs = [
        {"instruction": "Write the API call for the request.", "input": f"weather in {city}",
         "output": f'GET /weather?city={city}'}
        for city in ("Paris", "Rome", "Oslo", "Lima")
    ]  # fmt: skip
    data = tmp_path / "api.json"
    data.write_text(json.dumps(pairs))
    out = tmp_path / "api-adapter"
    result = CliRunner().invoke(
        app,
        ["train", "sft", "--data", str(data), "--model", str(tiny_model), "--task", "instruct", "--steps", "3",
         "--batch-size", "2", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "datapilot_train.json").read_text())
    assert meta["template"] == "default" and (out / "adapter_model.safetensors").is_file()
    assert "3 steps" in result.output


def test_training_a_missing_data_source_fails_before_loading(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from datapilot.cli.main import app
    from datapilot.core.errors import DataPilotError

    result = CliRunner().invoke(app, ["train", "text2sql", "--db", "nosuch", "--home", str(tmp_path / "h")])
    assert result.exit_code != 0 and isinstance(result.exception, DataPilotError)
    assert "nosuch" in str(result.exception)
    assert not (tmp_path / "h" / "models" / "trained" / "smollm2-135m-instruct-nosuch-sql" / "model.json").exists()
