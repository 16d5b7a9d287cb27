"""A stand-in speaking vLLM's documented wire shapes, for what ``hybridgate serve`` does not do.

``hybridgate serve`` is the real-HTTP, real-logprobs engine stand-in for the local tier; vLLM's
runtime LoRA endpoints (``POST /v1/load_lora_adapter``, ``POST /v1/unload_lora_adapter``, both
answering plain text, 400 for a name loaded twice or unknown) and the LoRA entries of
``GET /v1/models`` (``{"id": name, "parent": base}``) are served here, shaped after vLLM's
``docs/features/lora.md`` and ``entrypoints/openai/serving_models.py``. It records every body.
"""

from __future__ import annotations

import threading
import time
from typing import Any

BASE = "smollm2-135m-instruct"


class FakeVLLM:
    def __init__(self, *, runtime_lora: bool = True) -> None:
        self.runtime_lora = runtime_lora
        self.loras: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.chat_bodies: list[dict[str, Any]] = []
        self.answer: str | None = None
        """Chat answer text; None -> the first allowed choice (as a constrained decoder)."""
        self.overloaded = False
        """Answer chat requests 429 + Retry-After (an engine whose queue is full)."""
        self.garbage = False
        """Answer chat requests 200 with a body (or SSE event) that is not a completion."""

    # -- ASGI app -------------------------------------------------------------------------
    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, PlainTextResponse
        from starlette.routing import Route

        async def load(request: Request) -> Any:
            body = await request.json()
            self.calls.append(("load", body))
            name = body["lora_name"]
            if name in self.loras:
                return JSONResponse(
                    {
                        "object": "error",
                        "message": f"The lora adapter '{name}' has already been loaded.",
                        "type": "InvalidUserInput",
                        "code": 400,
                    },
                    status_code=400,
                )
            self.loras[name] = body["lora_path"]
            return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

        async def unload(request: Request) -> Any:
            body = await request.json()
            self.calls.append(("unload", body))
            name = body["lora_name"]
            if self.loras.pop(name, None) is None:
                return JSONResponse(
                    {"object": "error", "message": f"The lora adapter '{name}' cannot be found."},
                    status_code=400,
                )
            return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

        async def models(request: Request) -> Any:
            data = [{"id": BASE, "object": "model", "root": BASE, "parent": None}]
            data += [
                {"id": n, "object": "model", "root": p, "parent": BASE}
                for n, p in self.loras.items()
            ]
            return JSONResponse({"object": "list", "data": data})

        async def chat(request: Request) -> Any:
            body = await request.json()
            self.chat_bodies.append(body)
            if self.garbage:
                from starlette.responses import Response

                kind = "text/event-stream" if body.get("stream") else "application/json"
                return Response("data: {not json\n\n", status_code=200, media_type=kind)
            if self.overloaded:
                return JSONResponse(
                    {"object": "error", "message": "queue full", "code": 429},
                    status_code=429,
                    headers={"Retry-After": "3"},
                )
            if body["model"] not in (BASE, *self.loras):
                return JSONResponse(
                    {"object": "error", "message": f"The model `{body['model']}` does not exist."},
                    status_code=404,
                )
            choices = (body.get("structured_outputs") or {}).get("choice")
            text = self.answer if self.answer is not None else (choices or ["fine"])[0]
            tokens = [text[:2], text[2:]] if len(text) > 2 else [text]
            content = [
                {"token": t, "logprob": -0.25, "bytes": list(t.encode()), "top_logprobs": []}
                for t in tokens
            ]
            return JSONResponse(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": {"content": content} if body.get("logprobs") else None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": 12,
                        "completion_tokens": len(tokens),
                        "total_tokens": 12 + len(tokens),
                    },
                }
            )

        routes = [
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
        if self.runtime_lora:  # vLLM without VLLM_ALLOW_RUNTIME_LORA_UPDATING has no such routes
            routes += [
                Route("/v1/load_lora_adapter", load, methods=["POST"]),
                Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
            ]
        return Starlette(routes=routes)

    # -- running ----------------------------------------------------------------------------
    def start(self) -> str:
        import uvicorn

        config = uvicorn.Config(self.app(), host="127.0.0.1", port=0, log_level="warning")
        self._uv = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._uv.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._uv.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake vLLM did not start")
            time.sleep(0.01)
        port = self._uv.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def stop(self) -> None:
        self._uv.should_exit = True
        self._thread.join(timeout=10)
