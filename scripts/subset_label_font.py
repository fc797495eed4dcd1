"""Rebuild the label font: Noto Sans SC (SIL OFL 1.1) cut down to the characters a label needs.

Kept: printable ASCII, Latin-1 letters, CJK and full-width punctuation, and the 6,763 hanzi of GB 2312
(both levels), which covers every everyday simplified-Chinese label. The full font is 8 MB; the subset
is what ships in src/vidfactory/media/fonts/. Needs fontTools (not a project dependency):

    pip install --target /tmp/ft fonttools
    PYTHONPATH=/tmp/ft python scripts/subset_label_font.py NotoSansSC-Regular.otf
"""

from __future__ import annotations

import sys
from pathlib import Path

from fontTools import subset

OUT = Path(__file__).resolve().parents[1] / "src/vidfactory/media/fonts/NotoSansSC-Label.otf"


def gb2312_hanzi() -> list[str]:
    """Rows 0xB0..0xF7 of GB 2312 are the hanzi (level 1: 0xB0..0xD7, level 2: 0xD8..0xF7)."""
    chars = []
    for row in range(0xB0, 0xF8):
        for cell in range(0xA1, 0xFF):
            try:
                chars.append(bytes([row, cell]).decode("gb2312"))
            except UnicodeDecodeError:
                continue  # the few unassigned cells at the end of row 0xD7
    return chars


def label_characters() -> str:
    ascii_printable = [chr(c) for c in range(0x20, 0x7F)]
    latin1 = [chr(c) for c in range(0xA0, 0x100)]
    cjk_punct = [chr(c) for c in range(0x3000, 0x3040)]
    fullwidth = [chr(c) for c in range(0xFF01, 0xFF5F)]
    extra = list("·—‘’“”…※™©®")
    return "".join(ascii_printable + latin1 + cjk_punct + fullwidth + extra + gb2312_hanzi())


def main(source: str) -> None:
    options = subset.Options()
    options.layout_features = ["*"]
    options.name_IDs = ["*"]  # keep the copyright and licence records
    options.notdef_outline = True
    font = subset.load_font(source, options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=label_characters())
    subsetter.subset(font)
    subset.save_font(font, str(OUT), options)
    print(f"{OUT}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv[1])
