"""What runs cost: a price table of Batch API prices per model, and costs from token usage.

The default table holds the published batch prices (half the synchronous price at each of
OpenAI, Anthropic and Google) in USD per million tokens, each group with its source and date.
Prices change and accounts differ: pass your own
(``BatchRunner(prices={"my-model": ModelPrice(0.1, 0.4)})``) to add models or override these.
A model not in the table has no cost (``None``), never a guessed one.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from batchor.results import Usage


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """A model's Batch API price.

    Attributes:
        input_per_million: USD per million input (prompt) tokens.
        output_per_million: USD per million output (completion) tokens.
    """

    input_per_million: float
    output_per_million: float

    def cost(self, usage: Usage) -> float:
        """The cost in USD of that usage."""
        return (
            usage.input_tokens * self.input_per_million
            + usage.output_tokens * self.output_per_million
        ) / 1_000_000


#: Batch prices in USD per million tokens (input, output), with their sources below.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    # OpenAI Batch API, as published in 2025.
    "gpt-5": ModelPrice(0.625, 5.0),
    "gpt-5-mini": ModelPrice(0.125, 1.0),
    "gpt-5-nano": ModelPrice(0.025, 0.2),
    "gpt-4.1": ModelPrice(1.0, 4.0),
    "gpt-4.1-mini": ModelPrice(0.2, 0.8),
    "gpt-4.1-nano": ModelPrice(0.05, 0.2),
    "gpt-4o": ModelPrice(1.25, 5.0),
    "gpt-4o-mini": ModelPrice(0.075, 0.3),
    "o3": ModelPrice(1.0, 4.0),
    "o4-mini": ModelPrice(0.55, 2.2),
    "o3-mini": ModelPrice(0.55, 2.2),
    "gpt-3.5-turbo": ModelPrice(0.25, 0.75),
    # Embeddings bill input tokens only.
    "text-embedding-3-small": ModelPrice(0.01, 0.0),
    "text-embedding-3-large": ModelPrice(0.065, 0.0),
    "text-embedding-ada-002": ModelPrice(0.05, 0.0),
    # Anthropic Message Batches, read 2026-12-05: the "Batch input / Batch output" table of
    # https://docs.anthropic.com/en/docs/build-with-claude/batch-processing (Opus 4.1, Opus 4,
    # Sonnet 4), and for later models the standard price on the model's page,
    # https://platform.claude.com/docs/en/models/<model>/overview, with its "Batch API: 50%
    # discount on input and output". Dated ids (claude-sonnet-4-5-20250929) take these prices.
    # Prompt-cache reads and writes are counted as input tokens, at the input price.
    "claude-opus-5-5": ModelPrice(2.0, 10.0),  # standard $4 / $20
    "claude-sonnet-5-5": ModelPrice(1.0, 5.0),  # standard $2 / $10
    # Haiku 5.5 is priced by prompt length: these are the prices of prompts up to 100,000
    # tokens (standard $0.10 / $0.50); longer prompts cost $0.25 / $1.25 in a batch.
    "claude-haiku-5-5": ModelPrice(0.05, 0.25),
    "claude-opus-5": ModelPrice(2.5, 12.5),  # standard $5 / $25
    "claude-sonnet-5": ModelPrice(1.0, 5.0),  # standard $2 / $10
    "claude-sonnet-4-5": ModelPrice(1.5, 7.5),  # standard $3 / $15 (retired 2026-11-30)
    "claude-haiku-4-5": ModelPrice(0.5, 2.5),  # standard $1 / $5
    "claude-opus-4-1": ModelPrice(7.5, 37.5),
    "claude-opus-4": ModelPrice(7.5, 37.5),
    "claude-sonnet-4": ModelPrice(1.5, 7.5),
    # Gemini API Batch Mode: the "Batch" rows (text, image and video input) of
    # https://ai.google.dev/gemini-api/docs/pricing as published in March 2026 (Batch Mode is
    # 50% of the standard price). Where the price depends on the prompt's length, these are
    # the prices of prompts up to 200k tokens; the price above is in the comment.
    "gemini-3.1-pro-preview": ModelPrice(1.0, 6.0),  # over 200k: $2.00 / $9.00
    "gemini-3-flash-preview": ModelPrice(0.25, 1.5),
    "gemini-3.1-flash-lite-preview": ModelPrice(0.125, 0.75),
    "gemini-2.5-pro": ModelPrice(0.625, 5.0),  # over 200k: $1.25 / $7.50
    "gemini-2.5-flash": ModelPrice(0.15, 1.25),
    "gemini-2.5-flash-lite": ModelPrice(0.05, 0.2),
}


# A dated snapshot suffix: -2025-04-14, Anthropic's -20250929, or the older -0613 / -1106.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|20\d{6}|\d{4})$")
# Gemini's resource-name spelling of a model: models/gemini-2.5-flash.
_RESOURCE_PREFIX = "models/"


class PriceTable:
    """Prices by model name; a dated snapshot (``gpt-4.1-mini-2025-04-14``,
    ``gpt-3.5-turbo-0125``, ``claude-sonnet-4-5-20250929``) takes the price of its model, and
    ``models/gemini-2.5-flash`` that of ``gemini-2.5-flash``. Other variants (``o3-pro``,
    ``gemini-2.5-flash-preview-09-2025``) are not guessed: add them.

    Args:
        prices: Prices to add to, or override in, the defaults.
        include_defaults: Start from `DEFAULT_PRICES` (``False``: only ``prices``).
    """

    def __init__(
        self,
        prices: Mapping[str, ModelPrice | tuple[float, float]] | None = None,
        *,
        include_defaults: bool = True,
    ) -> None:
        table: dict[str, ModelPrice] = dict(DEFAULT_PRICES) if include_defaults else {}
        for model, price in (prices or {}).items():
            table[model] = price if isinstance(price, ModelPrice) else ModelPrice(*price)
        self.prices: Mapping[str, ModelPrice] = table
        """The table, model name to price."""

    def price(self, model: str) -> ModelPrice | None:
        """The price of ``model``, or ``None`` when the table does not know it."""
        if model in self.prices:
            return self.prices[model]
        name = model.removeprefix(_RESOURCE_PREFIX)
        for candidate in (name, _SNAPSHOT.sub("", name)):
            if candidate in self.prices:
                return self.prices[candidate]
        return None

    def cost(self, model: str, usage: Usage) -> float | None:
        """The cost in USD of ``usage`` on ``model`` (``None`` for an unknown model)."""
        price = self.price(model)
        return None if price is None else price.cost(usage)


def price_table(
    prices: PriceTable | Mapping[str, ModelPrice | tuple[float, float]] | None,
) -> PriceTable:
    """A `PriceTable` from what a user passed."""
    if isinstance(prices, PriceTable):
        return prices
    return PriceTable(prices)


def usd(amount: float) -> str:
    """An amount of USD for people: cents from a dollar up (``$1,234.50``), four
    significant digits below (``$0.0118``, ``$0.00001``)."""
    if amount == 0 or abs(amount) >= 1:
        return f"${amount:,.2f}"
    digits = min(3 - math.floor(math.log10(abs(amount))), 12)
    whole, _, cents = f"{amount:.{digits}f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"
