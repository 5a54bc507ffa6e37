"""The documentation stays true: every signature docs/architecture.md quotes is the code's,
every module it names exists, and every module of the package is named there."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "architecture.md"


class _Source(str):
    """An annotation as the source writes it (`from __future__ import annotations` keeps them
    as strings; inspect would quote them)."""

    def __repr__(self) -> str:
        return str(self)


def signature_line(module: str, name: str) -> str:
    """`def name(params) -> returns` or `class name(params)`, as the code defines it now."""
    obj = getattr(importlib.import_module(module), name)
    signature = inspect.signature(obj)

    def unquoted(annotation):
        return annotation if annotation is inspect.Parameter.empty else _Source(annotation)

    signature = signature.replace(
        parameters=[
            p.replace(annotation=unquoted(p.annotation)) for p in signature.parameters.values()
        ],
        return_annotation=unquoted(signature.return_annotation),
    )
    keyword = "class" if inspect.isclass(obj) else "def"
    return f"{keyword} {name}{signature}"


def documented_signatures() -> list[tuple[str, str, str]]:
    """(module, name, line) for every `def`/`class` line of the API blocks, each block line
    `# alol.module` naming the module of the lines below it."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    found, module = [], None
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if re.fullmatch(r"# alol[\w.]*", line.strip()):
                module = line.strip()[2:]
            elif match := re.match(r"(?:def|class) (\w+)", line):
                found.append((module, match.group(1), line.strip()))
    return found


def test_every_quoted_signature_is_the_codes():
    quoted = documented_signatures()
    assert len(quoted) > 30
    for module, name, line in quoted:
        assert line == signature_line(module, name), f"{module}.{name}"


def test_the_module_list_names_every_module_and_only_those():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"^\| `(alol[\w./]*)` \|", text, re.M))
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for path in (ROOT / "alol").rglob("*.py")
    }
    assert named == modules, (
        f"not listed: {sorted(modules - named)}; gone: {sorted(named - modules)}"
    )


def test_no_document_or_module_leans_on_files_outside_the_repository():
    for path in [*(ROOT / "alol").rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert "DESIGN.md" not in text and "../shared" not in text, path
