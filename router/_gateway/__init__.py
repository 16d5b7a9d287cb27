"""The request loop behind ``HybridClient`` (private: import from ``router``)."""
