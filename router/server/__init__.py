"""``hybridgate serve``: the gateway as an OpenAI-compatible HTTP server.

>>> from router.server.run import ServeConfig, serve
>>> serve(ServeConfig(policy="default", port=8000))   # then: openai.OpenAI(base_url=".../v1")

``app`` holds the endpoints, ``keys`` the API-key file, ``metrics`` the Prometheus registry,
``wire`` OpenAI's error shapes and SSE framing, ``run`` the uvicorn start-up.
"""
