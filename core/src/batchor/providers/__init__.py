"""Provider batch APIs behind the `BatchProvider` port."""
