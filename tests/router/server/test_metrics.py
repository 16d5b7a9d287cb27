"""``/metrics`` content that no HTTP round trip needs to show."""

from __future__ import annotations


def test_metrics_read_the_local_batcher_at_every_scrape() -> None:
    """Queue depth, running rows and the expected wait (NaN until measured) come from the
    batcher when /metrics is scraped, not from a copy taken at start."""
    from types import SimpleNamespace

    from router.server.metrics import ServerMetrics

    batcher = SimpleNamespace(queue_depth=0, running_rows=0, observe_wait=None, wait=None)
    batcher.expected_wait_s = lambda: batcher.wait
    metrics = ServerMetrics()
    metrics.watch_local(SimpleNamespace(batcher=batcher))
    text = metrics.render(None).decode()
    assert "hybridgate_local_expected_wait_seconds NaN" in text
    batcher.queue_depth, batcher.running_rows, batcher.wait = 7, 16, 2.5
    text = metrics.render(None).decode()
    assert "hybridgate_local_queue_depth 7.0" in text
    assert "hybridgate_local_batch_size 16.0" in text
    assert "hybridgate_local_expected_wait_seconds 2.5" in text
