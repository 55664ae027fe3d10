"""How ``mailer/`` is built: no import circle between its modules; the 2.x helpers live with the model.

Read from the source, not from what happens to be imported: every import counts, at the top of a
module, inside a function or under ``TYPE_CHECKING``, as a reader (and ``farm-studio look``) sees it.
"""

import ast
import subprocess
import sys
from pathlib import Path

import mailer
from tests.support.procs import REPO_ROOT, project_env

PACKAGE = Path(mailer.__file__).resolve().parent

# A module a reader can take in at one sitting; migrations are generated, not read.
MOST_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that the module at ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # "from mailer import enqueue" names the module mailer.enqueue; "from mailer.models import X" mailer.models.
            targets = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules] or [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in paths}
    return {module_name(path): imported_modules(path, modules) for path in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_graph_is_read():
    graph = import_graph()
    assert "mailer.models" in graph["mailer.enqueue"]  # from mailer.models import ...
    assert "mailer.writes" in graph["mailer.enqueue"]  # from mailer import writes
    assert "mailer.enqueue" in graph["mailer"]  # inside a function of mailer/__init__.py
    assert "mailer.outcomes" in graph["mailer.reading"]  # both "from mailer import outcomes" and "from mailer.outcomes"
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circle_in_mailer():
    assert circles(import_graph()) == []


def test_no_module_is_too_long_to_read():
    lengths = {
        str(path.relative_to(PACKAGE)): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
        if "migrations" not in path.parts
    }
    assert {path: lines for path, lines in lengths.items() if lines > MOST_LINES} == {}


def test_models_do_not_import_queueing():
    assert not {"mailer.enqueue", "mailer.dontsend", "mailer.writes"} & import_graph()["mailer.models"]


CHILD = """
import sys
import django
django.setup()
from mailer import models
from mailer.models import filter_recipient_list, make_message
message = make_message(subject="s", body="b", from_email="f@example.org", priority=models.PRIORITY_HIGH)
assert message.pk is None and message.email.subject == "s" and message.priority == models.PRIORITY_HIGH
assert filter_recipient_list(None) is None
print(" ".join(sorted(name for name in sys.modules if name.startswith("mailer."))))
"""


def test_make_message_needs_no_queueing_module():
    """django-mailer 2.x's ``mailer.models.make_message`` is the model's own: using it loads no queueing code."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD], env=project_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert "mailer.models" in loaded
    assert "mailer.enqueue" not in loaded
