"""The one home of hybridgate's default numbers (as openai-python keeps its in ``_constants.py``).

The policy sections (``router.policy.sections``) take their defaults from here, and so do the
runtime objects that can be built without a policy (``RetryConfig``, ``ResponseCache``,
``ShadowLabeller``, ``LocalTransport``); change a default here and every path follows.
``local_models`` is a leaf that imports nothing from ``router``, so it keeps its own copies;
the policy passes every value to ``LocalModelConfig`` explicitly, and a test pins the two to
the same numbers.

It imports nothing, so any module (and ``router.policy`` on the CLI's fast path) may use it.
"""

from __future__ import annotations

# -- cloud -------------------------------------------------------------------------------------

CLOUD_TIMEOUT_S: float = 60.0
"""Seconds one cloud attempt may take (``cloud.timeout_s``)."""
CLOUD_CONNECT_TIMEOUT_S: float = 5.0
"""Seconds to open the connection (``cloud.connect_timeout_s``); at most ``CLOUD_TIMEOUT_S``."""
CLOUD_DEADLINE_S: float = 90.0
"""Seconds the whole call may take, local try, retries and backoff included
(``cloud.deadline_s``): room for one full attempt, a retry and its backoff."""
CLOUD_MAX_RETRIES: int = 3
"""Retries after the first attempt on retryable errors (``cloud.max_retries``)."""
BACKOFF_BASE_S: float = 0.5
"""First backoff ceiling; doubles each retry, full jitter below it (``cloud.backoff_base_s``)."""
BACKOFF_MAX_S: float = 20.0
"""Cap on one wait, a server's ``Retry-After`` included (``cloud.backoff_max_s``)."""

# -- response cache ----------------------------------------------------------------------------

CACHE_TTL_S: float = 7 * 24 * 3600.0
"""One week (``cache.ttl_s``): long enough for repeated prompts, short enough that stale
answers age out."""
CACHE_SIZE_LIMIT_MB: int = 512
"""Disk the response cache may use before evicting (``cache.size_limit_mb``)."""

# -- shadow labelling --------------------------------------------------------------------------

SHADOW_MAX_PENDING: int = 1024
"""Shadow jobs queued or running at once before new ones are dropped (``shadow.max_pending``).

Why 1024: a pending job holds only its request and the cloud answer (~3 KB measured, so ~3 MB
at the cap, next to a ~1.1 GB model), and one worker labels a short answer in ~0.31 s (README:
prefix_cache.py, batch 1), so a full queue is ~5 minutes of single-worker backlog. The old cap
of 64 was 20 s of work: a burst of 92 samples lost 28 of them."""

# -- local model -------------------------------------------------------------------------------
# ``local_models.config.LocalModelConfig`` repeats the first three (it cannot import this).

LOCAL_MAX_BATCH_SIZE: int = 16
"""Most requests decoded together in one batch (``local.max_batch_size``)."""
LOCAL_MAX_WAIT_MS: float = 5.0
"""How long the batcher waits to fill a batch (``local.max_wait_ms``)."""
LOCAL_MAX_QUEUE: int = 256
"""Queued local requests beyond this are refused with ``Overloaded`` (``local.max_queue``)."""
LOCAL_MAX_QUEUE_WAIT_S: float | None = None
"""Off by default (``local.max_queue_wait_s``); a server under load should set it (e.g. 10):
a local request expected to wait longer for a batch slot is then refused at once, and a
cloud-eligible one goes to the cloud instead of queueing. At 500 clients a count-only queue of
256 made admitted requests wait ~50 s (README, #13 load). Off by default because it changes
where traffic goes whenever the local tier is busy (the demo's shadow work, say)."""
LOCAL_MAX_PROMPT_TOKENS: int = 1536
"""Longest prompt routed to the local model (``local.max_prompt_tokens``); with
``LOCAL_MAX_NEW_TOKENS`` it fits the engine's 2048-token context."""
LOCAL_MAX_NEW_TOKENS: int = 256
"""Most tokens one local answer may have (``local.max_new_tokens``): the length of an answer
when the request sets no ``max_tokens``, and the cap when it sets a larger one."""
LOCAL_USD_PER_HOUR: float = 0.10
"""What the local hardware costs per hour (``local.usd_per_hour``)."""
