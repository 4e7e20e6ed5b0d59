"""The example's sensor-driven mode as `test_services.py` serves it with `dagster dev`: the
example's reviews asset and job (examples/dagster/definitions.py), with the sensor running
from the start and ticking every 2 s instead of 60 s. Settings come from the environment
(``EXAMPLE_DATA_DIR``, ``BATCHOR_STORE``, ``OPENAI_BASE_URL``, ``OPENAI_API_KEY``)."""

from batchor_dagster import BatchorResource, batchor_sensor_assets
from dagster import AssetIn, DefaultSensorStatus, Definitions, EnvVar

from examples.dagster.definitions import DATA, days, label_reviews, reviews

review_labels_async = batchor_sensor_assets(
    name="review_labels_async",
    ins={"reviews": AssetIn()},
    job=label_reviews,
    destination=str(DATA / "review_labels_async" / "{partition_key}.parquet"),
    partitions_def=days,
    group_name="reviews",
    minimum_interval_seconds=2,
    default_status=DefaultSensorStatus.RUNNING,
    poll_interval=1.0,
)

defs = Definitions(
    assets=[reviews, *review_labels_async.assets],
    sensors=[review_labels_async.sensor],
    resources={"batchor": BatchorResource(openai_api_key=EnvVar("OPENAI_API_KEY"))},
)
