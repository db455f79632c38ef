"""``homellm firewall``: the rule that opens only the gateway port, and only to the local subnet."""

from __future__ import annotations

import ipaddress
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from homellm.i18n import _

Runner = Callable[[list[str]], tuple[int, str]]


def run_command(cmd: list[str]) -> tuple[int, str]:
    if not shutil.which(cmd[0]):
        return 127, ""
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return 126, ""
    return p.returncode, p.stdout + p.stderr


def parse_ufw_status(output: str) -> bool:
    return any(line.strip().lower() == "status: active" for line in output.splitlines())


def parse_firewalld_state(output: str) -> bool:
    return output.strip().lower() == "running"


def parse_nft_ruleset(output: str) -> bool:
    """nftables filters input when some chain hooks input."""
    return "hook input" in output


def detect_linux(run: Runner = run_command) -> str | None:
    """The active Linux firewall front-end: ufw, firewalld or nftables (in that order), else None."""
    rc, out = run(["ufw", "status"])
    if rc == 0 and parse_ufw_status(out):
        return "ufw"
    rc, out = run(["firewall-cmd", "--state"])
    if rc == 0 and parse_firewalld_state(out):
        return "firewalld"
    rc, out = run(["nft", "list", "ruleset"])
    if rc == 0 and parse_nft_ruleset(out):
        return "nftables"
    return None


def local_subnets() -> list[str]:
    """The IPv4 networks this machine's interfaces are on (no loopback)."""
    import psutil

    nets = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and a.netmask and not a.address.startswith("127."):
                nets.append(str(ipaddress.ip_network(f"{a.address}/{a.netmask}", strict=False)))
    return list(dict.fromkeys(nets))


@dataclass
class FirewallPlan:
    system: str  # windows | macos | ufw | firewalld | nftables | none
    commands: list[str]
    note: str = ""


def plan(os_name: str, port: int, subnets: list[str], linux_firewall: str | None = None) -> FirewallPlan:
    """The commands for this OS; ``os_name`` is platform.system()."""
    if os_name == "Windows":
        return FirewallPlan(
            "windows",
            [
                f'New-NetFirewallRule -DisplayName "homellm gateway" -Direction Inbound -Protocol TCP '
                f"-LocalPort {port} -RemoteAddress LocalSubnet -Action Allow -Profile Private,Domain"
            ],
        )
    if os_name == "Darwin":
        rules = "\\n".join(f"pass in quick proto tcp from {s} to any port {port}" for s in subnets)
        return FirewallPlan(
            "macos",
            [f"echo '{rules}' | sudo pfctl -a com.apple/homellm -f -", "sudo pfctl -E"],
            _("pf rules last until reboot; the application firewall must also allow Python"),
        )
    if linux_firewall == "ufw":
        return FirewallPlan(
            "ufw", [f"sudo ufw allow from {s} to any port {port} proto tcp comment homellm" for s in subnets]
        )
    if linux_firewall == "firewalld":
        cmds = [
            f'sudo firewall-cmd --permanent --add-rich-rule=\'rule family="ipv4" source address="{s}" '
            f'port port="{port}" protocol="tcp" accept\''
            for s in subnets
        ]
        return FirewallPlan("firewalld", [*cmds, "sudo firewall-cmd --reload"])
    if linux_firewall == "nftables":
        return FirewallPlan(
            "nftables", [f"sudo nft add rule inet filter input ip saddr {s} tcp dport {port} accept" for s in subnets]
        )
    return FirewallPlan(
        "none",
        [],
        _(
            "no active firewall: the port is reachable already; the gateway's own IP "
            "allowlist keeps clients to private ranges"
        ),
    )


def apply(p: FirewallPlan, run: Runner = run_command) -> list[tuple[str, int, str]]:
    """Run the plan's commands (``sudo`` dropped when already root); (command, exit code, output) each."""
    import os
    import shlex

    results = []
    for command in p.commands:
        if p.system == "windows":
            argv = ["powershell", "-NoProfile", "-Command", command]
        else:
            if "|" in command:
                argv = ["sh", "-c", command.replace("sudo ", "") if os.geteuid() == 0 else command]
            else:
                argv = shlex.split(command)
                if argv[0] == "sudo" and os.geteuid() == 0:
                    argv = argv[1:]
        rc, out = run(argv)
        results.append((command, rc, out.strip()))
    return results
