"""batchor for Dagster: OpenAI Batch API runs as idempotent, partitioned, observable assets.

``BatchorResource`` configures the store and credentials; ``batchor_asset`` runs a job to the
end in one materialisation; ``batchor_sensor_assets`` splits it into a submit asset, a sensor
and a collect asset so no worker waits on the provider.
"""

from batchor_dagster.assets import JobFn, batchor_asset
from batchor_dagster.driving import FIELDS as DESTINATION_FIELDS
from batchor_dagster.identity import RUN_ID_KEY, derived_run_id
from batchor_dagster.metadata import FAILURE_RATE_CHECK, LIMITS_CHECK, REUSED_RUN_KEY
from batchor_dagster.resource import BatchorAssetConfig, BatchorResource
from batchor_dagster.sensor import BatchorAssetOptions, BatchorSensorAssets, batchor_sensor_assets

__all__ = [
    "DESTINATION_FIELDS",
    "FAILURE_RATE_CHECK",
    "LIMITS_CHECK",
    "REUSED_RUN_KEY",
    "RUN_ID_KEY",
    "BatchorAssetConfig",
    "BatchorAssetOptions",
    "BatchorResource",
    "BatchorSensorAssets",
    "JobFn",
    "batchor_asset",
    "batchor_sensor_assets",
    "derived_run_id",
]
