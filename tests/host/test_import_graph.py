"""The seams hold: faast.contract imports nothing else of faast, faast.host imports only the contract
of faast (and the server nothing of host's internals it should not), and host's modules import each
other without a circle. Read from the sources, so a new import that breaks the rule fails here."""

import ast
from pathlib import Path

from support import ROOT

PACKAGES = {"faast": ROOT / "faast", "faast.host": ROOT / "host", "faast.kernels": ROOT / "kernels"}


def _module_name(path: Path) -> str:
    for package, folder in sorted(PACKAGES.items(), key=lambda item: -len(str(item[1]))):
        if path.is_relative_to(folder):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([package, *parts])
    raise AssertionError(path)


def _imports(path: Path) -> set[str]:
    """The faast modules `path` imports at run time (not those only a type checker reads)."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = [f"{base}.{alias.name}" for alias in node.names]
            found |= {n for n in [base, *names] if n.startswith("faast")}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("faast")}
    return found


def _graph(folder: Path) -> dict[str, set[str]]:
    sources = {_module_name(path): path for path in folder.rglob("*.py")}
    return {name: {i for i in _imports(path) if i in sources and i != name} for name, path in sources.items()}


def test_the_contract_imports_nothing_else_of_faast():
    for path in (ROOT / "faast" / "contract").rglob("*.py"):
        outside = {i for i in _imports(path) if not i.startswith("faast.contract")}
        assert not outside, f"{path.name} imports {outside}"


def test_host_imports_only_the_contract_of_faast():
    for path in (ROOT / "host").rglob("*.py"):
        server = {i for i in _imports(path) if not i.startswith(("faast.contract", "faast.host"))}
        assert not server, f"host/{path.relative_to(ROOT / 'host')} imports {server}"


def test_host_has_no_import_circle():
    graph = _graph(ROOT / "host")
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        assert module not in path, f"import circle: {' -> '.join([*path[path.index(module) :], module])}"
        if module in done:
            return
        for imported in sorted(graph.get(module, ())):
            if imported != module.rsplit(".", 1)[0]:  # a module importing its own package's __init__
                visit(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
