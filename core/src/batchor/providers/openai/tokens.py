"""Estimating a request's input tokens, for the enqueued-token budget.

With ``tiktoken`` installed and its ``o200k_base`` encoding already in its local cache, the
prompt is counted exactly (plus a few tokens of message framing). Otherwise - batchor never
downloads an encoding - the estimate is one token per 4 characters, rounded up, the rule of
thumb OpenAI documents for English text. Code and non-Latin scripts take more tokens per
character, so the rule undercounts them: leave headroom in ``enqueued_token_limit``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
from collections.abc import Callable

from batchor.items import PromptParts

CHARS_PER_TOKEN = 4
_FRAMING_TOKENS = 8  # role markers and separators around each message
_ENCODING_URL = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"


def estimate_tokens(parts: PromptParts) -> int:
    """Estimated input tokens of one request."""
    text = parts.prompt if parts.system is None else parts.system + "\n" + parts.prompt
    count = _counter()
    if count is not None:
        return count(text) + _FRAMING_TOKENS
    return -(-len(text) // CHARS_PER_TOKEN) + _FRAMING_TOKENS


@functools.cache
def _counter() -> Callable[[str], int] | None:
    """tiktoken's counter if its encoding is cached locally; never triggers a download."""
    try:
        import tiktoken
    except ImportError:
        return None
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    cached = os.path.join(cache_dir, hashlib.sha1(_ENCODING_URL.encode()).hexdigest())
    if not cache_dir or not os.path.exists(cached):
        return None
    try:
        encoding = tiktoken.get_encoding("o200k_base")
    except Exception:
        return None
    return lambda text: len(encoding.encode_ordinary(text))
