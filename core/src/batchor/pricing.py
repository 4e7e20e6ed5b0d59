"""What runs cost: a price table of Batch API prices per model, and costs from token usage.

The default table holds OpenAI's published Batch API prices (half the synchronous price) in
USD per million tokens, as of 2025. Prices change and accounts differ: pass your own
(``BatchRunner(prices={"my-model": ModelPrice(0.1, 0.4)})``) to add models or override these.
A model not in the table has no cost (``None``), never a guessed one.
"""

from __future__ import annotations

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


#: Batch API prices in USD per million tokens (input, output), as published in 2025.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
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
}


# A dated snapshot suffix: -2025-04-14, or the older -0613 / -1106 style.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


class PriceTable:
    """Prices by model name; a dated snapshot (``gpt-4.1-mini-2025-04-14``,
    ``gpt-3.5-turbo-0125``) takes the price of its model. Other variants (``o3-pro``) are
    not guessed: add them.

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
        base = _SNAPSHOT.sub("", model)
        return self.prices.get(base) if base != model else None

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
