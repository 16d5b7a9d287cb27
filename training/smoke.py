"""The checks ``AdapterRegistry.promote`` runs, now in ``local_models.adapter_checks`` beside the
registry (serving is what they protect); re-exported under their old import path."""

from local_models.adapter_checks import (
    WEIGHTS_SHA256_KEY,
    check_files,
    smoke_test,
    weights_sha256,
)

__all__ = ["WEIGHTS_SHA256_KEY", "check_files", "smoke_test", "weights_sha256"]
