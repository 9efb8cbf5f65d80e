"""Imports run one way: console/ (accounts, agents, vault) <- tasks_app/ <- console/web/ and the project
files. A module that imports upwards fails here, with the line that does it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT_FILES = {"console/settings.py", "console/urls.py", "console/asgi.py"}
LIBRARY = "tasks_app.client"  # the Python client: Django-free, shipped on its own


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)]
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def modules(folder: str) -> list[Path]:
    return [p for p in sorted((ROOT / folder).rglob("*.py")) if "migrations" not in p.parts]


def violations(folder: str, allowed, *, skip=lambda rel: False) -> list[str]:
    bad = []
    for path in modules(folder):
        rel = path.relative_to(ROOT).as_posix()
        if skip(rel):
            continue
        bad += [f"{rel}:{line} imports {name}" for line, name in imports(path) if not allowed(name)]
    return bad


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_bottom_layer_imports_nothing_above_it():
    bad = violations(
        "console",
        lambda name: not under(name, "tasks_app"),
        skip=lambda rel: rel.startswith("console/web/") or rel in PROJECT_FILES,
    )
    assert bad == []


def test_the_task_domain_never_imports_the_web_console():
    assert violations("tasks_app", lambda name: not under(name, "console.web")) == []


def test_the_client_imports_neither_django_nor_the_server():
    assert (
        violations(
            "tasks_app/client",
            lambda name: (
                not any(under(name, p) for p in ("django", "console", "channels", "ninja"))
                and (not under(name, "tasks_app") or under(name, LIBRARY))
            ),
        )
        == []
    )


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("from tasks_app.actions import create_task\nimport console.web.views\n")
    assert [name for _, name in imports(module)] == [
        "tasks_app.actions",
        "tasks_app.actions.create_task",
        "console.web.views",
    ]
