"""`BatchorConfig`: the Prefect block holding where runs are stored and how to reach the API."""

from __future__ import annotations

from typing import ClassVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from batchor import BatchRunner


class BatchorConfig(Block):
    """Where batchor keeps its runs and how it reaches the OpenAI Batch API.

    Every field is optional: an unset field falls back to the environment variable the core
    reads (``BATCHOR_STORE``, ``BATCHOR_ARTIFACTS``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``),
    then to the core's defaults (``./.batchor/``). Constructing the block opens nothing;
    `runner` does.

    Example:
        ```python
        from batchor_prefect import BatchorConfig

        BatchorConfig(
            store="postgresql+psycopg://batchor@db/batchor",
            artifacts="s3://my-bucket/batchor",
            openai_api_key="sk-...",
        ).save("prod")
        ```
    """

    _block_type_name: ClassVar[str] = "Batchor Config"
    _block_type_slug: ClassVar[str] = "batchor-config"
    _description: ClassVar[str] = (
        "Store, artifact location and OpenAI credentials for batchor's durable, "
        "exactly-once OpenAI Batch API runs."
    )

    store: str | None = Field(
        default=None,
        description=(
            "The control-plane store URL (sqlite:///path, postgresql+psycopg://...). "
            "Default: $BATCHOR_STORE, else sqlite:///.batchor/batchor.db."
        ),
    )
    artifacts: str | None = Field(
        default=None,
        description=(
            "Where request and output files live: a directory or an object-store URL "
            "(s3://bucket/prefix, gs://, az://). Default: $BATCHOR_ARTIFACTS, else "
            ".batchor/artifacts."
        ),
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        description="The OpenAI API key. Default: $OPENAI_API_KEY. Never persisted by batchor.",
    )
    openai_base_url: str | None = Field(
        default=None,
        description=(
            "An OpenAI-compatible API base URL. Default: the job's, else the one stored with "
            "the run, else $OPENAI_BASE_URL, else the official API."
        ),
    )

    def runner(self) -> BatchRunner:
        """A `batchor.BatchRunner` on this store and artifact location, with this key and base
        URL for every run it drives. Close it (or use it as a context manager) when done."""
        key = self.openai_api_key.get_secret_value() if self.openai_api_key else None
        return BatchRunner(
            self.store or None,
            self.artifacts or None,
            api_key=key or None,
            base_url=self.openai_base_url or None,
        )

    def describe(self) -> dict[str, str | None]:
        """What the block points at, safe to log: the store URL without its password, the
        artifact location and base URL, and whether a key is set (never the key)."""
        return {
            "store": redact_url(self.store) if self.store else None,
            "artifacts": self.artifacts,
            "openai_base_url": self.openai_base_url,
            "openai_api_key": "set" if self.openai_api_key else None,
        }


def redact_url(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part, if any, replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


def resolve_config(config: BatchorConfig | str | None) -> BatchorConfig:
    """The block to use: ``config`` itself, the saved block named ``config``, or (for ``None``)
    an empty block, which reads everything from the environment."""
    if config is None:
        return BatchorConfig()
    if isinstance(config, str):
        loaded = BatchorConfig.load(config)
        assert isinstance(loaded, BatchorConfig)
        return loaded
    if not isinstance(config, BatchorConfig):
        from batchor.errors import ConfigurationError

        raise ConfigurationError(
            f"config must be a BatchorConfig block, a saved block's name or None, "
            f"got {type(config).__name__}"
        )
    return config
