"""Engine contexts for tests that drive the phases one at a time, as a worker builds them."""

from __future__ import annotations

from pydantic import BaseModel

from batchor.engine.context import RunContext, RunSettings
from batchor.providers.base import BatchTransport
from batchor.providers.openai.transport import OpenAITransport
from batchor.providers.registry import config_from_record
from batchor.runner import BatchRunner
from batchor.stores.base import RunRecord
from batchor.testing import OpenAIBatchEmulator


def emulator_transport(emu: OpenAIBatchEmulator) -> OpenAITransport:
    """The real transport to the HTTP emulator, with the SDK's retries off."""
    return OpenAITransport(api_key=emu.api_key, base_url=emu.base_url, max_retries=0)


def make_context(
    runner: BatchRunner,
    record: RunRecord,
    transport: BatchTransport,
    model: type[BaseModel] | None = None,
) -> RunContext:
    """A context on ``record`` with the codec and limits its stored config names."""
    provider = config_from_record(record.config)
    codec = provider.codec(
        record.config.get("schema"), record.config.get("schema_name") or "output"
    )
    return RunContext(
        run=record,
        settings=RunSettings.from_config(record.config),
        store=runner.store,
        artifacts=runner.artifacts,
        transport=transport,
        codec=codec,
        limits=provider.limits,
        output_model=model,
    )
