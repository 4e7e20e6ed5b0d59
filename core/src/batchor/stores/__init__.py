"""The control plane: runs, items and batches behind the :class:`StateStore` port."""
