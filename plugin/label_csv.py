"""Labels as CSV: written with each sample's file where samples are files, read by index or
by file.

Written: `sample_index,path,label` for a model whose samples are files (an image folder; the
path relative to the folder, with `/`), else `sample_index,label`; labels are class names.
Read: those two layouts, `path,label`, or any header naming the columns (`sample_index` /
`index`, `path` / `file` / `filename`, `label` / `class`). Where a line has a path, the path
decides which sample it labels (files stay themselves when a folder changes; indices may
not).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from activelab.errors import InvalidLabelError, LabelFileError

INDEX_WORDS = {"sample_index", "sample", "index", "idx", "id"}
PATH_WORDS = {"path", "file", "filename", "file_name", "filepath", "image", "relative_path"}
LABEL_WORDS = {"label", "class", "name", "category", "target"}
COLUMN_NAMES = {"index": "sample index", "path": "path", "label": "label"}


@dataclass(frozen=True)
class SampleFiles:
    """The folder a model's samples were read from and sample i's file relative to it."""

    root: Path
    files: tuple[str, ...]

    def index_of(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.files)}

    def relative(self, text: str) -> str:
        """`text` (relative, or absolute inside the folder; `/` or `\\`) as the listing names
        it."""
        name = text.replace("\\", "/")
        if PurePosixPath(name).is_absolute() or Path(name).is_absolute():
            try:
                name = Path(name).resolve().relative_to(self.root.resolve()).as_posix()
            except ValueError:
                return name
        return name.removeprefix("./")


def write_csv(
    labels: Mapping[int, int], classes: tuple[str, ...], files: SampleFiles | None
) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["sample_index", "path", "label"] if files else ["sample_index", "label"])
    for index in sorted(labels):
        name = classes[labels[index]]
        writer.writerow([index, files.files[index], name] if files else [index, name])
    return out.getvalue()


def read_csv(
    text: str,
    resolve_label: Callable[[str], int],
    check_index: Callable[[int], int],
    classes: tuple[str, ...],
    files: SampleFiles | None,
) -> dict[int, int]:
    """{index: class} of a labels CSV; errors name the line and say what to fix."""
    if "\x00" in text:
        raise LabelFileError("The file is binary, not a CSV of 'sample_index,label' lines.")
    result: dict[int, int] = {}
    line_of: dict[int, int] = {}
    columns: dict[str, int] | None = None
    width = 0  # the header's number of columns (some may be neither sample nor label)
    by_path: dict[str, int] | None = None
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))  # Excel's UTF-8 mark
    for line_no, row in enumerate(reader, start=1):
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if line_no == 1 and is_header(row):
            columns, width = header_columns(row), len(row)
            continue
        raw_index, raw_path, raw_label = split_row(row, columns, width, line_no, files is not None)
        if raw_path is not None:
            if files is None:
                raise LabelFileError(
                    f"Line {line_no}: this model's samples are not files; give sample indices "
                    "(lines of sample_index,label)."
                )
            by_path = by_path if by_path is not None else files.index_of()
            found = by_path.get(files.relative(raw_path))
            if found is None:
                raise LabelFileError(
                    f"Line {line_no}: no sample is the file {raw_path!r} (paths are relative "
                    f"to {files.root})."
                )
            index = found
        else:
            assert raw_index is not None
            if not raw_index.lstrip("-").isdigit():
                raise LabelFileError(f"Line {line_no}: sample index {raw_index!r} is not a number.")
            try:
                index = check_index(int(raw_index))
            except InvalidLabelError as exc:
                raise LabelFileError(f"Line {line_no}: {exc}") from None
        try:
            label = resolve_label(raw_label)
        except InvalidLabelError as exc:
            raise LabelFileError(f"Line {line_no}: {exc}") from None
        if index in result and result[index] != label:
            raise LabelFileError(
                f"Line {line_no}: sample {index} is labeled {classes[label]!r} here but "
                f"{classes[result[index]]!r} on line {line_of[index]}; keep one of them."
            )
        result[index], line_of[index] = label, line_no
    return result


def split_row(
    row: list[str], columns: dict[str, int] | None, width: int, line_no: int, has_files: bool
) -> tuple[str | None, str | None, str]:
    """(index, path, label) of a row: by the header's columns, else by the row's shape."""
    cells = [cell.strip() for cell in row]
    if columns is not None:
        if len(cells) != width:
            named = {position: COLUMN_NAMES[column] for column, position in columns.items()}
            shape = ",".join(named.get(p, "...") for p in range(width))
            raise LabelFileError(f"Line {line_no}: expected '{shape}', got {len(cells)} fields.")
        path = cells[columns["path"]] if "path" in columns else None
        index = cells[columns["index"]] if "index" in columns else None
        return index, path or None, cells[columns["label"]]
    if len(cells) == 3 and has_files:
        return cells[0], cells[1] or None, cells[2]
    if len(cells) != 2:
        shapes = "'sample index,label' or 'path,label'" if has_files else "'sample index,label'"
        raise LabelFileError(f"Line {line_no}: expected {shapes}, got {len(cells)} fields.")
    if cells[0].lstrip("-").isdigit():
        return cells[0], None, cells[1]
    if "/" in cells[0] or "." in cells[0] or "\\" in cells[0]:
        return None, cells[0], cells[1]  # a file name
    return cells[0], None, cells[1]  # neither: reported as a bad index


def is_header(row: list[str]) -> bool:
    """A first row is a header when it names columns: no cell is a number and the first cell
    is a known column name ('l32,3' is a typo in a data row, not a header)."""
    cells = [cell.strip().lower() for cell in row]
    known = INDEX_WORDS | PATH_WORDS | LABEL_WORDS
    return not any(c.lstrip("-").isdigit() for c in cells) and cells[0] in known


def header_columns(row: list[str]) -> dict[str, int]:
    """Where the index, the path and the label are, by the header's names."""
    found: dict[str, int] = {}
    for position, cell in enumerate(row):
        word = cell.strip().lower()
        for column, words in (("index", INDEX_WORDS), ("path", PATH_WORDS)):
            if word in words and column not in found:
                found[column] = position
        if word in LABEL_WORDS and "label" not in found and word != "name":
            found["label"] = position
    if "label" not in found:  # "name" is the label column only when nothing else is
        names = [p for p, cell in enumerate(row) if cell.strip().lower() == "name"]
        if names:
            found["label"] = names[0]
        elif len(row) == 2:  # e.g. "index,species": the other column
            found["label"] = 1 - min(found.values(), default=0)
    if "label" not in found or not ({"index", "path"} & found.keys()):
        raise LabelFileError(
            "Line 1: the header names no label column or no sample column; use "
            "'sample_index,label', 'path,label' or 'sample_index,path,label'."
        )
    return found
