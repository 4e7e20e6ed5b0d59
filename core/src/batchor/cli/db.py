"""The ``db`` commands: the store's schema (``db upgrade``)."""

from __future__ import annotations

from pathlib import Path

import click
import sqlalchemy as sa

from batchor.cli.exits import OneLineErrorGroup, errors
from batchor.cli.output import console, echo_json
from batchor.runner import DEFAULT_STORE
from batchor.stores.migrate import current_revision, head_revision
from batchor.stores.migrate import upgrade as migrate_upgrade
from batchor.stores.open import open_store


@click.group(cls=OneLineErrorGroup)
def db() -> None:
    """Manage the store's schema."""


@db.command()
@click.option(
    "--store",
    envvar="BATCHOR_STORE",
    help="Store URL [env BATCHOR_STORE; default sqlite:///.batchor/batchor.db].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the revisions as JSON.")
def upgrade(store: str | None, as_json: bool) -> None:
    """Upgrade the store's schema to the newest revision this batchor knows (creating the
    store if it does not exist) and print the revision. Stores also upgrade when opened;
    this does it on purpose, e.g. before several workers start."""
    url = store or DEFAULT_STORE
    with errors():
        before = _revision_before(url)
        opened = open_store(url)
        try:
            migrate_upgrade(opened.engine)
            after = current_revision(opened.engine)
        finally:
            opened.close()
    shown = _shown(url)
    if as_json:
        echo_json({"store": shown, "from": before, "to": after, "head": head_revision()})
    elif before == after:
        console.print(f"{shown}: already at revision {after}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"{shown}: upgraded from revision {before or 'none (new store)'} to {after}",
            highlight=False,
            soft_wrap=True,
        )


def _revision_before(url: str) -> str | None:
    """The revision the store is at before upgrading (``None``: a new or in-memory store).
    An invalid URL is left for open_store to report."""
    try:
        parsed = sa.make_url(url)
    except Exception:
        return None
    if parsed.get_backend_name() == "sqlite":
        if not parsed.database or not Path(parsed.database).expanduser().is_file():
            return None  # a new (or in-memory) store; do not create the file here
    elif parsed.get_backend_name() != "postgresql":
        return None
    try:
        engine = sa.create_engine(parsed)
    except ModuleNotFoundError:
        return None  # open_store names the missing driver
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _shown(url: str) -> str:
    """The store URL without its password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
