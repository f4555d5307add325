"""The documents the code points at exist, and so do the sections it names."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("minigrad", "kernels", "profiling", "benchmarks", "tests") for p in (ROOT / folder).rglob("*.py")]


def test_every_reference_to_design_md_resolves():
    design = (ROOT / "DESIGN.md").read_text()
    headings = {line.lstrip("#").strip() for line in design.splitlines() if line.startswith("#")}
    cited = 0
    for path in SOURCES + [ROOT / "README.md"]:
        text = path.read_text()
        for section in re.findall(r'DESIGN\.md, "([^"]+)"', text):
            assert any(h.startswith(section) for h in headings), \
                f"{path.relative_to(ROOT)} cites DESIGN.md section {section!r}, not in it"
        cited += "DESIGN.md" in text
    assert cited >= 3  # the README, the backend and the models point at it


def test_the_layout_in_design_md_names_only_files_that_exist():
    design = (ROOT / "DESIGN.md").read_text()
    layout = design.split("## Layout", 1)[1].split("```")[1]
    folder = None
    for line in layout.splitlines():
        name = line.split()[0] if line.strip() else ""
        if not name or line.startswith("    "):
            continue
        if not line.startswith(" "):
            folder = name if name.endswith("/") else None
            assert (ROOT / name).exists(), f"DESIGN.md layout names {name}, which does not exist"
        elif folder and "*" not in name:
            for part in name.split(","):
                assert (ROOT / folder / part.strip()).exists(), f"DESIGN.md layout names {folder}{part.strip()}"
