"""The cache's vector indexes: defined in ``datapilot.retrieval`` (shared with knowledge retrieval and
flows), named here for the cache's own modules."""

from datapilot.retrieval import FaissIndex, InMemoryVectorIndex, MilvusIndex, VectorIndex

__all__ = ["FaissIndex", "InMemoryVectorIndex", "MilvusIndex", "VectorIndex"]
