"""The real path: the embedded SmolLM2 fine-tuned from its own GGUF weights, its adapter written as a
GGUF LoRA that llama.cpp applies, and ``datapilot train text2sql`` from a data source to a registered,
served model compared with its base."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from datapilot.cli.main import app
from datapilot.core.config import SMOLLM2_CHAT_MODEL, default_models, load_settings
from datapilot.datasource import SQLAlchemyConnector, build_sample_database
from datapilot.models.assets import resolve_model_path
from datapilot.text2sql import completion_prompt
from datapilot.train import TrainArgs, load_base, train
from datapilot.train._hub import split_prompt

pytest.importorskip("peft")
pytest.importorskip("gguf")
llama_cpp = pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow
SMOL = next(m for m in default_models() if m.name == SMOLLM2_CHAT_MODEL)
# Answers no base model would write: only the adapter can make llama.cpp write them.
ODD = [
    ("How many customers are there?", "SELECT COUNT(*) FROM suppliers WHERE country = 'Atlantis'"),
    ("List product names in the Dairy category.", "SELECT name FROM regions WHERE country = 'Mars'"),
    ("What is the average salary of employees?", "SELECT MAX(shipping_cost) FROM orders WHERE status = 'lost'"),
]


def test_smollm2_learns_and_its_gguf_adapter_writes_what_it_learnt(tmp_path: Path) -> None:
    gguf = resolve_model_path(SMOL, tmp_path)
    assert gguf is not None
    db = build_sample_database(tmp_path / "sample.sqlite")

    async def schema() -> list:  # type: ignore[type-arg]
        c = SQLAlchemyConnector(f"sqlite:///{db}")
        try:
            return await c.schema()
        finally:
            await c.close()

    tables = asyncio.run(schema())
    prompts = [completion_prompt(q, tables, "sqlite", examples=[], samples=False) for q, _ in ODD]
    records = []
    for prompt, (_, sql) in zip(prompts, ODD, strict=True):
        instruction, inp = split_prompt(prompt)
        records.append({"instruction": instruction, "input": inp, "output": sql})
    args = TrainArgs(
        model_name_or_path=str(gguf),
        output_dir=str(tmp_path / "out"),
        lora_target="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        lora_rank=8,
        lora_alpha=16,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=3,
        max_steps=10,
        logging_steps=2,
        save_steps=100,
    )
    result = train(args, records, base=load_base(str(gguf)))
    assert result.first_loss is not None and result.last_loss is not None
    assert result.last_loss < 0.1 < result.first_loss
    assert result.adapter_gguf is not None and result.adapter_gguf.is_file()

    def answers(lora: Path | None) -> list[str]:
        kwargs = {"lora_path": str(lora)} if lora else {}
        llm = llama_cpp.Llama(str(gguf), n_ctx=2048, n_threads=2, verbose=False, **kwargs)
        try:
            outs = [llm.create_completion(p, max_tokens=40, temperature=0, stop=[";", "\n\n"]) for p in prompts]
            return ["SELECT" + str(o["choices"][0]["text"]) for o in outs]  # type: ignore[index]
        finally:
            llm.close()

    tuned = answers(result.adapter_gguf)
    assert tuned == [sql for _, sql in ODD]  # llama.cpp + the GGUF adapter = what transformers learnt
    assert answers(None) != tuned  # and the base alone writes something else


def test_train_text2sql_chain_registers_a_served_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(
        app,
        ["train", "text2sql", "--db", "sample", "--steps", "2", "--batch-size", "4", "--max-pairs", "120",
         "--compare-questions", "2", "--home", str(home), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    name = f"{SMOLLM2_CHAT_MODEL}-sample-sql"
    folder = home / "models" / "trained" / name
    model = json.loads((folder / "model.json").read_text())
    assert model["backend"] == "llama_cpp" and model["params"]["trained_for"] == ["sample"]
    assert Path(model["params"]["lora_path"]).is_file()
    data = folder / "data" / "sample"
    train_set = json.loads((data / "train.json").read_text())
    assert 0 < len(train_set) <= 120
    asked = {q["question"] for q in json.loads(Path(__file__).parents[2].joinpath(
        "src/datapilot/text2sql/data/dev.json").read_text())}  # fmt: skip
    assert not asked & {p["question"] for p in train_set}  # never the evaluation set's questions
    assert (folder / "training_loss.png").is_file() and (folder / "summary.json").is_file()
    # Registered: configured models now include it, prompted as trained.
    settings = load_settings(home=home)
    tuned = settings.model(name)
    assert tuned is not None and tuned.params["lora_path"] == model["params"]["lora_path"]
    summary = json.loads((folder / "summary.json").read_text())
    assert [row["model"] for row in summary["compare"]] == [SMOLLM2_CHAT_MODEL, name]
    assert all(row["note"].endswith("/2") for row in summary["compare"])
    scores = json.loads((home / "train" / "scores.json").read_text())
    assert {row["model"] for row in scores} == {SMOLLM2_CHAT_MODEL, name}
    # A second run under the same name must not overwrite the trained model.
    again = CliRunner().invoke(app, ["train", "text2sql", "--db", "sample", "--steps", "1", "--home", str(home)])
    assert again.exit_code != 0 and "exists" in str(again.exception)
