"""The Ollama imitation decodes like Ollama: checked against a real Go program with Ollama's struct tags.

The imitation (homellm.testing.go_json) is what the gateway's allowlist tests run against; if it
parsed like Python, a bypass that Go allows would pass unseen. Here both decode the same hostile
bodies and must agree on every field the gateway checks, and on which bodies are errors.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.conftest import require_tool

from homellm.serve.body import go_fold
from homellm.testing.go_json import GoJSONError, decode_struct

HERE = Path(__file__).parent / "gojson"
TYPES = {
    "chat": ("api.ChatRequest", ["model"], ["messages", "stream", "options", "format"]),
    "show": ("api.ShowRequest", ["model", "system", "name"], ["verbose"]),
    "copy": ("api.CopyRequest", ["source", "destination"], []),
    "create": ("api.CreateRequest", ["model", "from", "name"], []),
    "openai": ("openai.ChatCompletionRequest", ["model"], ["messages", "stream"]),
}
CORPUS: list[tuple[str, bytes]] = [
    ("chat", b'{"model":"allowed","Model":"forbidden"}'),
    ("chat", b'{"Model":"forbidden","model":"allowed"}'),
    ("chat", b'{"MODEL":"forbidden"}'),
    ("chat", b'{"mOdEl":"forbidden"}'),
    ("chat", b'{"Mod\\u0065l":"forbidden"}'),
    ("chat", b'{"model":"allowed","mod\\u0065l":"forbidden"}'),
    ("chat", b'{"model":"allowed"} {"model":"forbidden"}'),
    ("chat", b'{"model":"allowed"}garbage'),
    ("chat", b'\xef\xbb\xbf{"model":"allowed"}'),
    ("chat", b'{"model":NaN}'),
    ("chat", b'{"model":1}'),
    ("chat", b'{"model":null}'),
    ("chat", b'{"model":"a\\ud800b"}'),
    ("chat", b'{"model":"a\xffb"}'),
    ("chat", b"[]"),
    ("chat", b"null"),
    ("chat", b"  "),
    ("chat", b'{"model":"x","stream":false,"Stream":true,"options":{"num_ctx":1,"NUM_CTX":2}}'),
    ("chat", '{"model":"x","me\u017f\u017fages":[]}'.encode()),
    ("chat", '{"modeL":"a","\u212aeep":"k"}'.encode()),
    ("show", b'{"name":"allowed","Model":"forbidden"}'),
    ("show", b'{"model":"allowed","NAME":"forbidden"}'),
    ("show", b'{"Name":"a","name":"b","nAmE":"c"}'),
    ("copy", b'{"source":"allowed","SOURCE":"forbidden","destination":"x","Destination":"y"}'),
    ("copy", '{"\u017fource":"forbidden","destination":"x"}'.encode()),
    ("create", b'{"model":"new","FROM":"forbidden"}'),
    ("create", b'{"model":"new","from":"a","From":"forbidden","fRoM":"forbidden2"}'),
    ("openai", b'{"model":"allowed","Model":"forbidden","messages":[]}'),
    ("openai", b'{"MODEL":"forbidden","stream":true}'),
]


@pytest.fixture(scope="module")
def go_decoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    require_tool(go is not None, "Go", "apt-get install -y golang-go (it checks the Ollama imitation against Go)")
    assert go is not None
    work = tmp_path_factory.mktemp("gojson")
    shutil.copy(HERE / "main.go", work / "main.go")
    (work / "go.mod").write_text("module gojson\n\ngo 1.19\n")
    env = dict(os.environ, GOFLAGS="-mod=mod", GOCACHE=str(work / "cache"), GOPATH=str(work / "gopath"))
    subprocess.run([go, "build", "-o", "gojson", "."], cwd=work, check=True, env=env, capture_output=True)
    return work / "gojson"


def _go(decoder: Path, cases: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    lines = "".join(json.dumps({"type": t, "body_b64": base64.b64encode(b).decode()}) + "\n" for t, b in cases)
    out = subprocess.run([str(decoder)], input=lines, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_the_imitation_decodes_every_hostile_body_like_go(go_decoder: Path) -> None:
    results = _go(go_decoder, CORPUS)
    assert len(results) == len(CORPUS)
    for (kind, body), go in zip(CORPUS, results, strict=True):
        type_name, strings, others = TYPES[kind]
        try:
            ours = decode_struct(body, type_name, strings, others)
            ok = True
        except GoJSONError:
            ours, ok = {}, False
        assert ok == go["ok"], (kind, body, go)
        if ok:
            fields = go["fields"]
            assert isinstance(fields, dict)
            for name, value in fields.items():
                assert ours.get(name, "") == value, (kind, body, name, go)


def test_go_folds_the_long_s_and_the_kelvin_sign_like_ascii_letters(go_decoder: Path) -> None:
    """The Unicode part of Go's folding, which a plain lower() misses."""
    assert go_fold("me\u017f\u017fages") == go_fold("MESSAGES") and go_fold("\u212aeep_alive") == go_fold("keep_alive")
    [long_s] = _go(go_decoder, [("show", '{"\u017fystem":"s"}'.encode())])
    assert long_s["fields"] == {"model": "", "name": "", "system": "s"}
