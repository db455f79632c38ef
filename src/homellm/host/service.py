"""``homellm service``: start the gateway at login (systemd user unit, launchd agent, Task Scheduler)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

LABEL = "dev.homellm.gateway"


@dataclass
class ServiceFile:
    path: Path | None  # None on Windows: the task lives in Task Scheduler
    content: str
    install: list[list[str]]
    uninstall: list[list[str]]
    status: list[str]


def command() -> list[str]:
    return [sys.executable, "-m", "homellm", "up"]


def systemd_unit(home: Path, user_home: Path) -> ServiceFile:
    exec_start = " ".join(shlex.quote(c) for c in command())
    content = f"""[Unit]
Description=homellm gateway (local LLM for the home network)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
Environment=HOMELLM_HOME={home}
ExecStart={exec_start}
Restart=on-failure
RestartSec=5

[Install]
WantedBy=default.target
"""
    path = user_home / ".config" / "systemd" / "user" / "homellm.service"
    return ServiceFile(
        path,
        content,
        [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", "homellm"]],
        [["systemctl", "--user", "disable", "--now", "homellm"], ["systemctl", "--user", "daemon-reload"]],
        ["systemctl", "--user", "status", "homellm", "--no-pager"],
    )


def launchd_plist(home: Path, user_home: Path) -> ServiceFile:
    args = "\n".join(f"    <string>{escape(c)}</string>" for c in command())
    content = f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
  <key>Label</key><string>{LABEL}</string>
  <key>ProgramArguments</key>
  <array>
{args}
  </array>
  <key>EnvironmentVariables</key>
  <dict><key>HOMELLM_HOME</key><string>{escape(str(home))}</string></dict>
  <key>RunAtLoad</key><true/>
  <key>KeepAlive</key><dict><key>SuccessfulExit</key><false/></dict>
  <key>StandardErrorPath</key><string>{escape(str(home / "gateway.log"))}</string>
</dict>
</plist>
"""
    path = user_home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    return ServiceFile(
        path,
        content,
        [["launchctl", "load", "-w", str(path)]],
        [["launchctl", "unload", "-w", str(path)]],
        ["launchctl", "list", LABEL],
    )


def windows_task(home: Path) -> ServiceFile:
    action = f'cmd /c "set HOMELLM_HOME={home}&& {subprocess.list2cmdline(command())}"'
    create = ["schtasks", "/Create", "/TN", "homellm", "/SC", "ONLOGON", "/RL", "LIMITED", "/F", "/TR", action]
    return ServiceFile(
        None,
        subprocess.list2cmdline(create),
        [create],
        [["schtasks", "/Delete", "/TN", "homellm", "/F"]],
        ["schtasks", "/Query", "/TN", "homellm"],
    )


def for_platform(os_name: str, home: Path, user_home: Path) -> ServiceFile:
    if os_name == "Windows":
        return windows_task(home)
    if os_name == "Darwin":
        return launchd_plist(home, user_home)
    return systemd_unit(home, user_home)
