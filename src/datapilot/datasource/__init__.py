"""Data sources behind the ``Connector`` seam: read-only queries over databases and files.

* ``Connector`` (``tables``, ``schema``, ``run``, ``close``): ``SQLAlchemyConnector`` (SQLite,
  PostgreSQL, MySQL/MariaDB) and ``DuckDBConnector`` (DuckDB files; CSV, Excel and Parquet files
  loaded into DuckDB). More kinds plug in with ``register_connector``.
* ``check_read_only``: the sqlglot guard every query passes first (one SELECT or WITH ... SELECT,
  nothing that writes, locks, changes the session or touches files). Connections are read-only too.
* ``DataSources``: registered definitions in the metadata store plus open connectors; passwords are
  stored apart and never shown. ``build_sample_database``: the demo database (registered as
  ``sample`` by default).
"""

from datapilot.datasource._duckdb import DuckDBConnector, clean_name, clean_names
from datapilot.datasource._guard import check_read_only
from datapilot.datasource._operators import Connection, ConnectOperator, SchemaOperator, SourcesEnv, SQLOperator
from datapilot.datasource._registry import (
    DataSourceConfig,
    DataSources,
    DataSourceStore,
    connector_kinds,
    open_connector,
    register_connector,
)
from datapilot.datasource._sample import (
    SAMPLE_NAME,
    build_sample_database,
    ensure_database,
    ensure_sample_database,
    random_day,
    writing_database,
)
from datapilot.datasource._sqlalchemy import SQLAlchemyConnector, sqlite_read_only_url
from datapilot.datasource._types import (
    ColumnInfo,
    Connector,
    DataSourceNotFoundError,
    ForeignKey,
    QueryError,
    QueryResult,
    QueryTimeoutError,
    SQLSyntaxError,
    TableInfo,
    UnsafeSQLError,
    jsonable,
)

__all__ = [
    "SAMPLE_NAME",
    "ColumnInfo",
    "ConnectOperator",
    "Connection",
    "Connector",
    "DataSourceConfig",
    "DataSourceNotFoundError",
    "DataSourceStore",
    "DataSources",
    "DuckDBConnector",
    "ForeignKey",
    "QueryError",
    "QueryResult",
    "QueryTimeoutError",
    "SQLAlchemyConnector",
    "SQLOperator",
    "SQLSyntaxError",
    "SchemaOperator",
    "SourcesEnv",
    "TableInfo",
    "UnsafeSQLError",
    "build_sample_database",
    "check_read_only",
    "clean_name",
    "clean_names",
    "connector_kinds",
    "ensure_database",
    "ensure_sample_database",
    "jsonable",
    "open_connector",
    "random_day",
    "register_connector",
    "sqlite_read_only_url",
    "writing_database",
]
