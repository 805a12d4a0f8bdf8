"""Create a local `.env` for `make run` on first use.

It holds a fresh random DJANGO_SECRET_KEY and DEBUG on, and picks the offline
`mock` LLM backend when no OpenAI key is in the environment. An existing
`.env` is never touched; the process environment always wins over it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    target = ROOT / ".env"
    if target.exists():
        return
    has_key = bool(os.environ.get("CRYSTALLISE_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY"))
    lines = [
        "# Created by `make run` for local use. See .env.example for every variable.",
        f"DJANGO_SECRET_KEY={secrets.token_urlsafe(48)}",
        "DJANGO_DEBUG=true",
    ]
    if not has_key and not os.environ.get("CRYSTALLISE_LLM_BACKEND"):
        lines.append("# No OpenAI key was found: offline, deterministic answers at no cost.")
        lines.append("CRYSTALLISE_LLM_BACKEND=mock")
    target.write_text("\n".join(lines) + "\n")
    print(f"Created {target.name} (local settings: DEBUG on, "
          f"LLM backend {'openai' if has_key else 'mock'}).")


if __name__ == "__main__":
    main()
