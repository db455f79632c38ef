"""``homellm env``: settings that point other tools at the paired server through the bridge."""

from __future__ import annotations

from homellm.connect.profiles import Profile
from homellm.errors import UsageError
from homellm.i18n import _

SHELLS = ("bash", "zsh", "fish", "powershell")


def env_lines(profile: Profile, shell: str, bridge_port: int = 11434) -> list[str]:
    if shell not in SHELLS:
        raise UsageError(
            _("unknown shell {shell!r}; use one of {SHELLS}").format(shell=shell, SHELLS=", ".join(SHELLS))
        )
    bridge = f"http://127.0.0.1:{bridge_port}"
    values = [
        ("OLLAMA_HOST", bridge),
        ("OPENAI_BASE_URL", f"{bridge}/v1"),
        ("OPENAI_API_KEY", profile.key),
    ]
    comment = "#"
    lines = [f"{comment} homellm: {profile.name} ({profile.url}) via `homellm bridge` on port {bridge_port}"]
    for name, value in values:
        if shell == "fish":
            lines.append(f'set -gx {name} "{value}"')
        elif shell == "powershell":
            lines.append(f'$env:{name} = "{value}"')
        else:
            lines.append(f'export {name}="{value}"')
    return lines


def detect_shell(shell_env: str | None, windows: bool) -> str:
    if windows:
        return "powershell"
    name = (shell_env or "").rsplit("/", 1)[-1]
    return name if name in SHELLS else "bash"
