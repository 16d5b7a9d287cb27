"""The README's curl examples, run against a real server (the wire format without any SDK)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def _curl(*args: str) -> str:
    return subprocess.run(
        ["curl", "-s", *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


def test_readme_curl_examples(start_server) -> None:
    srv = start_server()
    url = f"{srv.base_url}/chat/completions"
    body = '{"model": "hybridgate", "messages": [{"role": "user", "content": "What is 2+2?"}]}'
    out = _curl(url, "-H", "Content-Type: application/json", "-i", "-d", body)
    head, _, payload = out.replace("\r\n", "\n").partition("\n\n")
    assert head.startswith("HTTP/1.1 200") and "x-hybridgate-route: cloud" in head
    reply = json.loads(payload)
    assert reply["choices"][0]["message"]["content"] == "4" and reply["route"]["route"] == "cloud"
    streamed = _curl(
        "-N",
        url,
        "-d",
        '{"messages": [{"role": "user", "content": "What is 2+2?"}], "stream": true}',
    )
    events = [line[6:] for line in streamed.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "4"
    bad = _curl(url, "-d", '{"messages": []}')
    assert json.loads(bad)["error"]["param"] == "messages"
