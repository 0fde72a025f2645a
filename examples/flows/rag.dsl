-- The DSL form from the founding description, naming the embedded models and vector store.
CREATE WORKFLOW RAG AS
BEGIN
  DATA requestData = RECEIVE REQUEST FROM http_source("/examples/rags", method = "post");
  DATA processedData = TRANSFORM requestData USING embedding(model = "all-MiniLM-L6-v2");
  DATA retrievedData = RETRIEVE DATA FROM vstore(database = "embedded", key = processedData) ON ERROR FAIL;
  DATA modelResult = APPLY LLM "gemma-3-270m" WITH DATA retrievedData AND PARAMETERS (temperature = 0.7, max_tokens = 32)
    ON ERROR RETRY 2 TIMES;
  RESPOND TO http_source WITH modelResult ON ERROR LOG "Failed to respond to request";
END;
