-- Fill the embedded vector store: POST {"texts": ["...", "..."]} to /api/v1/awel/trigger/examples/ingest
CREATE WORKFLOW ingest AS
BEGIN
  DATA docs = RECEIVE REQUEST FROM http_source("/examples/ingest", method = "post");
  DATA vectors = TRANSFORM docs USING embedding(model = "all-MiniLM-L6-v2", field = "texts");
  DATA stored = TRANSFORM vectors USING vector_add(store = "embedded");
  RESPOND TO docs WITH stored;
END;
