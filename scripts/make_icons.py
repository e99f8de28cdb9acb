"""Render web/public/icon.svg into the PNG icons the web app manifest names.

Run after changing the SVG, and commit the PNGs: ``.venv/bin/python scripts/make_icons.py``.
Chromium draws them (Debian's, through Playwright), so the PNGs match what browsers show.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import sync_playwright

PUBLIC = Path(__file__).resolve().parent.parent / "web" / "public"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# (file, size, padding in %): a maskable icon keeps its drawing inside the middle 80%.
ICONS = [("icon-192.png", 192, 0), ("icon-512.png", 512, 0), ("icon-maskable-512.png", 512, 10)]


def page_for(svg: str, size: int, padding: int) -> str:
    background = "#17406b" if padding else "transparent"
    inner = size * (100 - 2 * padding) // 100
    return (
        f"<body style='margin:0;width:{size}px;height:{size}px;background:{background};"
        f"display:flex;align-items:center;justify-content:center'>"
        f"<div style='width:{inner}px;height:{inner}px'>{svg}</div></body>"
    )


def main() -> None:
    svg = (PUBLIC / "icon.svg").read_text().replace("<svg ", "<svg width='100%' height='100%' ", 1)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for name, size, padding in ICONS:
            page = browser.new_page(viewport={"width": size, "height": size})
            page.set_content(page_for(svg, size, padding))
            page.screenshot(path=PUBLIC / name, omit_background=not padding)
            page.close()
        browser.close()
    print("wrote", ", ".join(name for name, _, _ in ICONS))


if __name__ == "__main__":
    main()
