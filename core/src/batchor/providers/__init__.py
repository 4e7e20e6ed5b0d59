"""Provider batch APIs behind the :class:`~batchor.providers.base.BatchProvider` port."""
