"""The ``openai`` npm package against a real server: the wire format as Node apps see it.

``.ci/run`` installs the package into ``.ci/node`` (``npm install --prefix .ci/node openai``);
without node or that folder the test is skipped.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

MODULES = Path(__file__).resolve().parents[3] / ".ci" / "node" / "node_modules"
pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (MODULES / "openai").is_dir(),
    reason="needs node and the openai npm package in .ci/node",
)

SCRIPT = """
const OpenAI = require("openai");
const client = new OpenAI({ baseURL: process.argv[1], apiKey: "sk-node-key-1", maxRetries: 0 });
(async () => {
  const messages = [{ role: "user", content: "What is 2+2?" }];
  const { data, response } = await client.chat.completions
    .create({ model: "hybridgate", messages }).withResponse();
  let streamed = "";
  const stream = await client.chat.completions.create({ model: "hybridgate", messages, stream: true });
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
  let status = null;
  try { await client.chat.completions.create({ model: "hybridgate", messages: [] }); }
  catch (err) { status = [err.status, err.param ?? err.error?.param]; }
  console.log(JSON.stringify({
    text: data.choices[0].message.content, route: response.headers.get("x-hybridgate-route"),
    streamed, status,
  }));
})();
"""


def test_openai_npm_package_works_unchanged(start_server, tmp_path) -> None:
    from router.server.keys import KeyRing

    keys = tmp_path / "keys.yaml"
    keys.write_text("sk-node-key-1: node-app\n")
    srv = start_server(keys=KeyRing.load(keys))
    out = subprocess.run(
        ["node", "-e", SCRIPT, srv.base_url],
        capture_output=True,
        text=True,
        timeout=60,
        env={"NODE_PATH": str(MODULES), "PATH": "/usr/bin:/bin:/usr/local/bin"},
        check=True,
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"text": "4", "route": "cloud", "streamed": "4", "status": [400, "messages"]}
