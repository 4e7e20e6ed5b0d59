"""`SqlStateStore`: the `StateStore` port on SQLAlchemy Core, for SQLite (the embedded
default) and Postgres, composed of its operations by what they touch."""

from __future__ import annotations

from batchor.stores.sql.batches import BatchOperations
from batchor.stores.sql.budget import BudgetOperations
from batchor.stores.sql.collect import CollectOperations
from batchor.stores.sql.finish import FinishOperations
from batchor.stores.sql.forming import FormingOperations
from batchor.stores.sql.items import ItemOperations
from batchor.stores.sql.reads import ReadOperations
from batchor.stores.sql.runs import RunOperations
from batchor.stores.sql.stops import StopOperations


class SqlStateStore(
    RunOperations,
    ItemOperations,
    FormingOperations,
    BatchOperations,
    CollectOperations,
    ReadOperations,
    StopOperations,
    BudgetOperations,
    FinishOperations,
):
    """A `StateStore` on any SQLAlchemy engine (see `SqlConnector` for how each backend's
    connections are set up, and each operations class for the transitions)."""
