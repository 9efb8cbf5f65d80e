"""Text out of office documents with the standard library: OOXML (docx, xlsx, pptx) and ODF.

Older binary formats (doc, xls, ppt), RTF, EPUB and iWork files are not read; the caller then
says so instead of inlining anything.
"""

from __future__ import annotations

import io
import re
import zipfile
from xml.etree import ElementTree

MAX_XML_BYTES = 50 * 1024 * 1024  # decompressed, across the parts read: a zip bomb stops here


def extract_text(content: bytes, extension: str) -> str:
    """The document's text, or "" when the format is not supported or nothing could be read."""
    reader = _READERS.get(extension)
    if reader is None:
        return ""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return reader(_Parts(archive)).strip()
    except (zipfile.BadZipFile, ElementTree.ParseError, KeyError, ValueError, EOFError):
        return ""


class _Parts:
    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.budget = MAX_XML_BYTES

    def names(self, pattern: str) -> list[str]:
        found = [n for n in self.archive.namelist() if re.fullmatch(pattern, n)]
        return sorted(found, key=lambda n: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", n)])

    def xml(self, name: str) -> ElementTree.Element:
        info = self.archive.getinfo(name)
        self.budget -= info.file_size
        if self.budget < 0:
            raise ValueError("document too large to read")
        return ElementTree.fromstring(self.archive.read(name))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _paragraphs(root: ElementTree.Element, para: str = "p", text: str = "t") -> list[str]:
    out = []
    for element in root.iter():
        if _local(element.tag) == para:
            line = "".join(t.text or "" for t in element.iter() if _local(t.tag) == text)
            if line.strip():
                out.append(line)
    return out


def _docx(parts: _Parts) -> str:
    return "\n".join(_paragraphs(parts.xml("word/document.xml")))


def _pptx(parts: _Parts) -> str:
    slides = []
    for index, name in enumerate(parts.names(r"ppt/slides/slide\d+\.xml"), start=1):
        slides.append(f"Slide {index}:\n" + "\n".join(_paragraphs(parts.xml(name))))
    return "\n\n".join(slides)


def _xlsx(parts: _Parts) -> str:
    shared: list[str] = []
    if "xl/sharedStrings.xml" in parts.archive.namelist():
        root = parts.xml("xl/sharedStrings.xml")
        shared = [
            "".join(t.text or "" for t in si.iter() if _local(t.tag) == "t")
            for si in root
            if _local(si.tag) == "si"
        ]
    sheets = []
    for index, name in enumerate(parts.names(r"xl/worksheets/sheet\d+\.xml"), start=1):
        rows = []
        for row in parts.xml(name).iter():
            if _local(row.tag) != "row":
                continue
            cells = []
            for cell in row:
                if _local(cell.tag) != "c":
                    continue
                value = next((v.text or "" for v in cell if _local(v.tag) == "v"), "")
                if cell.get("t") == "s" and value.isdigit() and int(value) < len(shared):
                    value = shared[int(value)]
                elif cell.get("t") == "inlineStr":
                    value = "".join(t.text or "" for t in cell.iter() if _local(t.tag) == "t")
                cells.append(value)
            if any(cells):
                rows.append("\t".join(cells))
        sheets.append(f"Sheet {index}:\n" + "\n".join(rows))
    return "\n\n".join(sheets)


def _odf(parts: _Parts) -> str:
    root = parts.xml("content.xml")
    lines = []
    for element in root.iter():
        if _local(element.tag) in {"p", "h"}:
            line = "".join(element.itertext())
            if line.strip():
                lines.append(line)
    return "\n".join(lines)


_READERS = {
    ".docx": _docx,
    ".docm": _docx,
    ".pptx": _pptx,
    ".pptm": _pptx,
    ".ppsx": _pptx,
    ".xlsx": _xlsx,
    ".xlsm": _xlsx,
    ".odt": _odf,
    ".ods": _odf,
    ".odp": _odf,
}
