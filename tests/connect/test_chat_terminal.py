"""``homellm chat`` in a real terminal (a pty): streaming, Ctrl-C stops the answer and the server's
generation, the chat goes on, /bye leaves."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest
from tests.conftest import run_gateway

from homellm.connect.profiles import Profile, ProfileStore
from homellm.serve.backends import OllamaBackend
from homellm.serve.tls import ensure_tls
from homellm.store import open_database
from homellm.store.keys import KeyStore
from homellm.testing.fake_backend import Recorder, Script, make_app, serve_in_thread


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")
def test_ctrl_c_stops_the_answer_and_the_generation(tmp_path: Path) -> None:
    script, rec = Script(tokens=1000, delay=0.05), Recorder()  # about 50 s of answer
    server_home, laptop_home = tmp_path / "server", tmp_path / "laptop"
    key = KeyStore(open_database(server_home)).create("laptop")[1]
    tls = ensure_tls(server_home, None, None)
    with (
        serve_in_thread(make_app("ollama", script, rec)) as backend_url,
        run_gateway(server_home, OllamaBackend(backend_url), tls) as (url, _),
    ):
        ProfileStore(laptop_home).save(Profile("pc", url, tls.fingerprint, tls.cert.read_text(), key))
        env = dict(os.environ, HOMELLM_HOME=str(laptop_home), COLUMNS="120")
        exe = str(Path(sys.executable).with_name("homellm"))
        child = pexpect.spawn(exe, ["chat", "fake:small"], env=env, encoding="utf-8", timeout=20)
        try:
            child.expect(">>> ")
            child.sendline("write a long story")
            child.expect("tok3 ")  # the answer is streaming
            child.sendintr()  # Ctrl-C
            child.expect(r"\(stopped\)")
            assert rec.cancelled.wait(5), "the server kept generating after Ctrl-C"
            child.expect(">>> ")  # the chat goes on, with the partial answer in its history
            script.tokens, script.delay = 3, 0.0
            child.sendline("again")
            child.expect("tok2 ")
            child.expect(">>> ")
            child.sendline("/bye")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
