"""The ``db`` commands: the store's schema (``db upgrade``)."""

from __future__ import annotations

import click
import sqlalchemy as sa

from batchor.cli.exits import OneLineErrorGroup, errors
from batchor.cli.output import console, echo_json
from batchor.runner import DEFAULT_STORE
from batchor.stores.migrate import current_revision, head_revision
from batchor.stores.migrate import upgrade as migrate_upgrade
from batchor.stores.open import open_store, store_revision


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
        before = store_revision(url)  # creates nothing; names a file it cannot read
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


def _shown(url: str) -> str:
    """The store URL without its password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
