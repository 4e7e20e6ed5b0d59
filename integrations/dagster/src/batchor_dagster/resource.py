"""`BatchorResource`: where batchor keeps its state and how it reaches the provider, as a
Dagster resource. Credentials are handed to the core when a step runs and never persisted."""

from __future__ import annotations

from typing import Any

from dagster import Config, ConfigurableResource
from pydantic import Field

from batchor import BatchRunner


class BatchorResource(ConfigurableResource):  # type: ignore[type-arg]  # TResValue is Self
    """Configuration shared by every batchor asset and sensor of a code location.

    Every field is optional: an unset field falls back to the environment variable the core
    and the ``openai`` SDK read (``BATCHOR_STORE``, ``BATCHOR_ARTIFACTS``, ``OPENAI_API_KEY``,
    ``OPENAI_BASE_URL``). Give secrets as ``EnvVar("...")`` so Dagster shows the variable's
    name, never its value::

        BatchorResource(
            store=EnvVar("BATCHOR_STORE"),
            openai_api_key=EnvVar("OPENAI_API_KEY"),
        )

    Building the resource opens nothing: the store and the provider are reached only when an
    asset or a sensor runs.
    """

    store: str | None = Field(
        default=None,
        description="Store URL (sqlite:///..., postgresql+psycopg://...); "
        "default $BATCHOR_STORE, else sqlite:///.batchor/batchor.db.",
    )
    artifacts: str | None = Field(
        default=None,
        description="Artifact directory or object-store URL (s3://bucket/prefix, ...); "
        "default $BATCHOR_ARTIFACTS, else .batchor/artifacts.",
    )
    openai_api_key: str | None = Field(
        default=None,
        description="OpenAI API key (use EnvVar); default $OPENAI_API_KEY. Never persisted.",
    )
    openai_base_url: str | None = Field(
        default=None,
        description="OpenAI-compatible API base URL; default the job's, else the one stored "
        "with the run, else $OPENAI_BASE_URL.",
    )

    def runner(self) -> BatchRunner:
        """A `batchor.BatchRunner` on this resource's store and artifacts, carrying the
        credentials for this process only. Close it (or use it as a context manager)."""
        return BatchRunner(
            store=self.store or None,
            artifacts=self.artifacts or None,
            api_key=self.openai_api_key or None,
            base_url=self.openai_base_url or None,
        )

    def __repr_args__(self) -> Any:
        # Keep the key out of reprs, which end up in tracebacks and logs.
        for name, value in super().__repr_args__():
            yield name, ("***" if name == "openai_api_key" and value else value)


class BatchorAssetConfig(Config):
    """Run config of a batchor asset (``batchor_asset`` and the submit asset of
    ``batchor_sensor_assets``), set in the launchpad or with ``run_config``::

        {"ops": {"review_labels": {"config": {"rerun": true}}}}
    """

    rerun: bool = Field(
        default=False,
        description="Buy a new batch run even if the partition's last materialisation drove "
        "a run of the same job (same model, schema, prompts and input content), which is "
        "otherwise reused without submitting anything.",
    )
