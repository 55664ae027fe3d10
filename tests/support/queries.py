"""Reading what ``CaptureQueriesContext`` captured."""

import re


def inserts_into(table: str, queries: list[dict]) -> list[str]:
    """The statements among ``queries`` that wrote rows into ``table`` (INSERT, or COPY on PostgreSQL)."""
    statements = [re.sub(r"^\d+ times: ", "", q["sql"].lstrip()) for q in queries]
    return [sql for sql in statements if sql.upper().startswith(("INSERT", "COPY")) and table in sql]
