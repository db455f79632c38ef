"""Firewall rules, the doctor's audit and service definitions. Windows and macOS firewalls and
service managers cannot run here: their rules are checked by content, and the Linux tools' real
output formats are parsed from captures."""

from __future__ import annotations

import os
import plistlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from homellm.host import doctor, firewall, service
from homellm.settings import Settings
from homellm.store import open_database
from homellm.store.keys import KeyStore

CAPTURED = Path(__file__).parent / "captured"
SUBNETS = ["192.168.1.0/24"]


def test_parses_real_firewall_tool_output() -> None:
    assert firewall.parse_ufw_status((CAPTURED / "ufw-status-active.txt").read_text())
    assert not firewall.parse_ufw_status((CAPTURED / "ufw-status-inactive.txt").read_text())
    assert firewall.parse_nft_ruleset((CAPTURED / "nft-ruleset-debian.txt").read_text())
    assert not firewall.parse_nft_ruleset("")
    assert firewall.parse_firewalld_state("running\n") and not firewall.parse_firewalld_state("not running\n")


def test_detects_the_active_linux_firewall_in_order() -> None:
    answers = {"ufw": (1, ""), "firewall-cmd": (0, "running\n"), "nft": (0, "")}
    assert firewall.detect_linux(lambda cmd: answers[cmd[0]]) == "firewalld"
    active_ufw = (CAPTURED / "ufw-status-active.txt").read_text()
    assert firewall.detect_linux(lambda cmd: (0, active_ufw) if cmd[0] == "ufw" else (0, "")) == "ufw"
    assert firewall.detect_linux(lambda cmd: (127, "")) is None


@pytest.mark.parametrize(
    ("os_name", "linux", "expected"),
    [
        ("Windows", None, "New-NetFirewallRule -DisplayName \"homellm gateway\" -Direction Inbound -Protocol TCP "
                          "-LocalPort 11435 -RemoteAddress LocalSubnet -Action Allow"),
        ("Darwin", None, "pass in quick proto tcp from 192.168.1.0/24 to any port 11435"),
        ("Linux", "ufw", "sudo ufw allow from 192.168.1.0/24 to any port 11435 proto tcp comment homellm"),
        ("Linux", "firewalld", 'source address="192.168.1.0/24" port port="11435" protocol="tcp" accept'),
        ("Linux", "nftables", "sudo nft add rule inet filter input ip saddr 192.168.1.0/24 tcp dport 11435 accept"),
    ],
)  # fmt: skip
def test_rules_open_only_the_port_only_to_the_subnet(os_name: str, linux: str | None, expected: str) -> None:
    p = firewall.plan(os_name, 11435, SUBNETS, linux)
    assert any(expected in c for c in p.commands), p.commands
    assert all("11435" in c for c in p.commands if "reload" not in c and "pfctl -E" not in c)


def test_no_firewall_says_so() -> None:
    p = firewall.plan("Linux", 11435, SUBNETS, None)
    assert p.system == "none" and not p.commands and "allowlist" in p.note


def test_apply_drops_sudo_for_root_and_reports_failures() -> None:
    import os

    ran: list[list[str]] = []
    results = firewall.apply(firewall.plan("Linux", 11435, SUBNETS, "ufw"), lambda c: ran.append(c) or (1, "denied"))
    assert results[0][1] == 1 and results[0][2] == "denied"
    assert ran[0][0] == ("ufw" if os.geteuid() == 0 else "sudo")


def test_local_subnets_cover_this_machines_addresses() -> None:
    import ipaddress

    from homellm.serve.network import lan_addresses

    nets = [ipaddress.ip_network(n) for n in firewall.local_subnets()]
    assert not any(n.is_loopback for n in nets)
    ipv4 = [ipaddress.ip_address(a) for a in lan_addresses() if ":" not in a]
    assert all(any(a in n for n in nets) for a in ipv4)
    assert bool(nets) == bool(ipv4)


def test_doctor_flags_exposed_ollama_and_wildcard_origins(tmp_path: Path) -> None:
    s = Settings(home=tmp_path, OLLAMA_HOST="0.0.0.0:11434", OLLAMA_ORIGINS="*")
    findings = {f.check: f for f in doctor.check_ollama(s, [], "Windows")}
    assert findings["Ollama exposed"].status == "fail" and "System Properties" in findings["Ollama exposed"].fix
    assert findings["OLLAMA_ORIGINS"].status == "fail"
    clean = doctor.check_ollama(Settings(home=tmp_path, OLLAMA_HOST="127.0.0.1"), [], "Linux")
    assert [f.status for f in clean] == ["ok"]


def test_doctor_finds_a_listening_ollama(tmp_path: Path) -> None:
    from homellm.serve.network import lan_addresses
    from homellm.testing.fake_backend import Recorder, Script, make_app, serve_in_thread

    lan = [a for a in lan_addresses() if ":" not in a]
    if not lan:
        pytest.skip("no non-loopback IPv4 address on this machine")
    try:
        with serve_in_thread(make_app("ollama", Script(), Recorder()), host="0.0.0.0", port=doctor.OLLAMA_PORT):
            found = doctor.check_ollama(Settings(home=tmp_path), lan, "Linux")
    except (RuntimeError, OSError):
        pytest.skip("port 11434 is taken on this machine")
    assert found[0].status == "fail" and f"{lan[0]}:11434" in found[0].detail and "systemctl" in found[0].fix


def test_doctor_key_hygiene_and_certificate(tmp_path: Path) -> None:
    from homellm.serve.tls import ensure_tls

    store = KeyStore(open_database(tmp_path))
    for name in ("a1", "a2", "a3"):
        store.create(name, admin=True)
    store.create("phone")
    store.create("scoped", ["qwen2.5"])
    later = time.time() + 40 * 86400
    by = {f.check: f for f in doctor.check_keys(store.list(), now=later)}
    assert by["admin keys"].status == "warn" and "a3" in by["admin keys"].detail
    assert by["unused keys"].status == "warn" and "phone" in by["unused keys"].detail
    # pairing makes every-model keys for the household's devices: the doctor says which, without a warning
    assert by["model allowlists"].detail.endswith("phone") and by["model allowlists"].status == "ok"
    assert "homellm pair --models" in by["model allowlists"].fix
    assert doctor.check_certificate(tmp_path).status == "warn"  # none yet
    ensure_tls(tmp_path, None, None)
    assert doctor.check_certificate(tmp_path).status == "ok"
    assert doctor.check_certificate(tmp_path, now=time.time() + 820 * 86400).status == "warn"
    assert doctor.check_certificate(tmp_path, now=time.time() + 900 * 86400).status == "fail"


def test_service_definitions(tmp_path: Path) -> None:
    unit = service.for_platform("Linux", tmp_path / "h", tmp_path)
    assert unit.path == tmp_path / ".config/systemd/user/homellm.service"
    assert (
        "ExecStart=" in unit.content and "-m homellm up" in unit.content and "WantedBy=default.target" in unit.content
    )
    assert f"Environment=HOMELLM_HOME={tmp_path / 'h'}" in unit.content and "Restart=on-failure" in unit.content
    mac = service.for_platform("Darwin", tmp_path / "h", tmp_path)
    plist = plistlib.loads(mac.content.encode())
    assert plist["Label"] == "dev.homellm.gateway" and plist["ProgramArguments"][-2:] == ["homellm", "up"]
    assert plist["RunAtLoad"] is True and plist["EnvironmentVariables"]["HOMELLM_HOME"] == str(tmp_path / "h")
    win = service.for_platform("Windows", tmp_path / "h", tmp_path)
    assert win.path is None and win.install[0][:6] == ["schtasks", "/Create", "/TN", "homellm", "/SC", "ONLOGON"]
    assert "-m homellm up" in win.install[0][-1]


def test_systemd_reads_the_user_unit(tmp_path: Path) -> None:
    """The unit as written for a user, read by the real systemctl from a temporary home (never the
    tester's own ~/.config/systemd/user): ``list-unit-files`` parses unit files without a running manager."""
    if shutil.which("systemctl") is None:
        pytest.skip("no systemctl on this machine")
    user_home = tmp_path / "user"
    unit = service.for_platform("Linux", tmp_path / "h", user_home)
    assert unit.path is not None and unit.path.is_relative_to(user_home)
    unit.path.parent.mkdir(parents=True)
    unit.path.write_text(unit.content)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(user_home),
           "XDG_CONFIG_HOME": str(user_home / ".config"), "XDG_RUNTIME_DIR": str(tmp_path / "run")}  # fmt: skip
    listed = subprocess.run(["systemctl", "--user", "list-unit-files", "--no-pager", "homellm.service"],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    states = {line.split()[0]: line.split()[1] for line in listed.stdout.splitlines() if line.startswith("homellm")}
    assert states == {"homellm.service": "disabled"}  # found, with the [Install] section that `enable` needs


def test_cli_dry_run_and_json(tmp_path: Path) -> None:
    import json
    import sys

    exe = str(Path(sys.executable).with_name("homellm"))
    env = dict(os.environ, HOMELLM_HOME=str(tmp_path))
    out = subprocess.run([exe, "service", "install", "--dry-run"], capture_output=True, text=True, env=env).stdout
    assert "homellm up" in out
    fw = json.loads(subprocess.run([exe, "firewall", "--json"], capture_output=True, text=True, env=env).stdout)
    assert fw["system"] in ("none", "ufw", "firewalld", "nftables", "windows", "macos")
    doc = subprocess.run([exe, "doctor", "--json"], capture_output=True, text=True, env=env)
    checks = {f["check"] for f in json.loads(doc.stdout)}
    assert {"Ollama exposed", "gateway port", "TLS certificate", "admin keys"} <= checks
