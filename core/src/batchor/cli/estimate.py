"""``estimate``: a dry run of a file-based job: requests, tokens, batches and cost, with
nothing written or sent."""

from __future__ import annotations

import json
from pathlib import Path

import click

from batchor.cli.exits import errors
from batchor.cli.filejobs import JobSpec, build_job
from batchor.cli.options import job_options, json_option
from batchor.cli.output import console, echo_json, key_value_table
from batchor.errors import ConfigurationError
from batchor.estimate import estimate_job
from batchor.pricing import PriceTable


@click.command()
@job_options
@click.option(
    "--prices",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help='JSON file of prices to add or override: {"model": [input, output]} in USD per '
    "million tokens.",
)
@json_option
def estimate(spec: JobSpec, prices: Path | None, as_json: bool) -> None:
    """Estimate a job without submitting anything: requests, estimated input tokens,
    batches under the provider's limits, and cost. Takes the same inputs and options as
    `run`; needs no API key."""
    with errors():
        table = PriceTable(_read_prices(prices) if prices else None)
        job = build_job(spec)
        found = estimate_job(job, prices=table)
    where = {"provider": spec.provider, "endpoint": job.provider_config.endpoint}
    if as_json:
        echo_json({**where, **found.to_dict()})
        return
    money = (
        "-" if found.estimated_input_cost_usd is None else f"${found.estimated_input_cost_usd:,.4f}"
    )
    rows = {
        **where,
        "deployment" if spec.provider == "azure" else "model": found.model,
        "requests": f"{found.requests:,}",
        "too large to send": f"{found.too_large:,}",
        "input bytes": f"{found.input_bytes:,}",
        "estimated input tokens": f"{found.estimated_input_tokens:,}",
        "batches": found.batches,
        "estimated input cost": money,
        "max output tokens per request": found.max_output_tokens,
        "estimated cost at most": None
        if found.estimated_max_cost_usd is None
        else f"${found.estimated_max_cost_usd:,.4f}",
    }
    console.print(key_value_table("estimate (nothing was submitted)", rows))
    if found.estimated_input_cost_usd is None:
        console.print(f"no price known for {found.model!r}: pass --prices", soft_wrap=True)


def _read_prices(path: Path) -> dict[str, tuple[float, float]]:
    try:
        raw = json.loads(path.read_text())
        return {str(m): (float(p[0]), float(p[1])) for m, p in raw.items()}
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ConfigurationError(
            f"{path}: prices must be a JSON object of model -> [input, output] USD per "
            f"million tokens ({exc})"
        ) from None
