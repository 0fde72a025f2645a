"""The RAG example as an operator-layer DAG (DB-GPT's ``simple_rag_example``, on the embedded models).

HTTP trigger -> parse request -> prompt -> store history -> load history -> embedding -> retrieve
-> chat -> model -> output parser. Documents come from the ``embedded`` vector store; fill it with
the ``ingest`` flow (``ingest.dsl``). Serve it with ``[awel] flows_dir`` pointing at this folder:

    curl -X POST localhost:5670/api/v1/awel/trigger/examples/simple_rag \\
         -H 'content-type: application/json' -d '{"conv_uid": "c1", "user_input": "What is AWEL?"}'
"""

from datapilot.awel import (
    DAG,
    ChatHistoryLoadOperator,
    ChatHistoryStoreOperator,
    ChatOperator,
    ChatPromptOperator,
    ChatRequest,
    ChatRequestOperator,
    EmbeddingOperator,
    HttpTrigger,
    LLMOperator,
    Retry,
    TextOutputParser,
    VectorRetrieveOperator,
)

CHAT_MODEL = "gemma-3-270m"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"

with DAG("simple_rag_example", description="RAG chat over the embedded vector store") as dag:
    trigger_task = HttpTrigger("/examples/simple_rag", methods="POST", request_body=ChatRequest)
    req_parse_task = ChatRequestOperator(default_model=CHAT_MODEL, name="parse_request")
    prompt_task = ChatPromptOperator(
        "You are a helpful assistant. Answer the user's question in one or two sentences.", name="prompt"
    )
    history_storage_task = ChatHistoryStoreOperator(name="store_history")
    history_task = ChatHistoryLoadOperator(limit=6, name="load_history")
    embedding_task = EmbeddingOperator(EMBEDDING_MODEL, name="embedding")
    retrieve_task = VectorRetrieveOperator("embedded", k=3, name="retrieve")
    chat_task = ChatOperator(max_tokens=48, temperature=0.0, name="chat")
    model_task = LLMOperator(on_error=Retry(1, backoff=0.05), name="model")
    output_parser_task = TextOutputParser(name="output_parser")
    (
        trigger_task
        >> req_parse_task
        >> prompt_task
        >> history_storage_task
        >> history_task
        >> embedding_task
        >> retrieve_task
        >> chat_task
        >> model_task
        >> output_parser_task
    )
