"""The control plane: runs, items and batches behind the `StateStore` port."""
