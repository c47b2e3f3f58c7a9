"""The layering made literal: every module imports only from its own layer or the layers below.

The imports are read with :mod:`ast` (module level and inside functions, ``from transport import
x`` resolved to the submodule ``x`` when there is one, the module names a dynamic import spells
out), so that a lazy import cannot hide an upward dependency. The same order is written in the
README's Layout section.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "transport"

LAYERS: tuple[tuple[str, ...], ...] = (
    # nothing of the project below:
    ("errors", "xml", "deprecation", "examplepki", "openssl", "ids"),
    ("credentials", "pkcs11"),
    ("tls",),
    ("vihf", "xmlsig"),
    ("soap",),
    ("config",),  # profiles carry TLS settings, VIHF and channel options; the facades read them
    ("dmp", "teleservices"),
    ("",),  # transport/__init__.py: the curated public API, over the facades
    ("stubs",),  # servers of both families, built from their message modules
    ("doctor", "smoke"),
    ("cli", "__main__"),
)
"""Lowest first; a name is a module or a package of ``transport`` (``""`` the package itself)."""

SERVICE_FAMILIES = ("dmp", "teleservices")
WIRE_MODULES = ("requests", "urllib3", "httpx", "http", "ssl", "socket")


def module_name(path: Path, root: Path) -> str:
    """The dotted name of the module in ``path`` (``transport.soap.channel``)."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: Path, dotted: str) -> bool:
    relative = root.joinpath(*dotted.split(".")[1:])
    return relative.with_suffix(".py").is_file() or (relative / "__init__.py").is_file()


def _names_a_module(node: ast.AST, root: Path) -> bool:
    if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
        return False
    return node.value.startswith(f"{root.name}.") and _is_module(root, node.value)


def imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in ``path``, wherever it sits in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    current = module_name(path, root)
    package = current if path.name == "__init__.py" else current.rpartition(".")[0]
    dynamic = any(
        isinstance(node, ast.Attribute) and node.attr == "import_module" for node in ast.walk(tree)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield node.lineno, submodule if _is_module(root, submodule) else base
        elif dynamic and _names_a_module(node, root):
            # importlib.import_module("transport.x"): the module is named in a string.
            yield node.lineno, node.value


def layer_of(dotted: str, root_name: str = "transport") -> int | None:
    """The index in :data:`LAYERS` of a module of the package, None for another package's."""
    if dotted != root_name and not dotted.startswith(f"{root_name}."):
        return None
    top = dotted.split(".")[1] if "." in dotted else ""
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{dotted} is in no layer: add it to LAYERS and to the README")


def upward_imports(root: Path) -> list[str]:
    """Every import in the package at ``root`` of a module in a layer above the importer's."""
    found = []
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        own = layer_of(importer, root.name)
        for line, imported in imports(path, root):
            layer = layer_of(imported, root.name)
            if layer is not None and own is not None and layer > own:
                found.append(f"{path.relative_to(root.parent)}:{line} imports {imported}")
    return found


def test_every_module_imports_only_its_layer_or_below() -> None:
    assert upward_imports(PACKAGE) == []


def test_every_module_and_package_has_a_layer() -> None:
    tops = {path.stem for path in PACKAGE.glob("*.py")} | {
        path.parent.name for path in PACKAGE.glob("*/__init__.py")
    }
    placed = {name for names in LAYERS for name in names}
    assert tops - {"__init__"} <= placed
    assert placed - {""} <= tops


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "transport"
    for name, text in {"__init__.py": "", "soap/__init__.py": "", **files}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


UPWARD = {
    "from-import": ("from transport.soap import channel\n", "1 imports transport.soap.channel"),
    "import": ("import transport.soap\n", "1 imports transport.soap"),
    "inside a function": ("def f():\n    from transport import soap\n", "2 imports transport.soap"),
    "dynamic": (
        "import importlib\nimportlib.import_module('transport.soap')\n",
        "2 imports transport.soap",
    ),
    "the public API": ("from transport import Profile\n", "1 imports transport"),
}


@pytest.mark.parametrize(("text", "found"), UPWARD.values(), ids=UPWARD.keys())
def test_an_upward_import_is_found(tmp_path: Path, text: str, found: str) -> None:
    root = _tree(tmp_path, {"xml.py": text, "soap/channel.py": "from transport import xml\n"})
    assert upward_imports(root) == [f"transport/xml.py:{found}"]


def test_the_service_families_do_not_touch_the_wire_nor_each_other() -> None:
    for family in SERVICE_FAMILIES:
        others = tuple(f"transport.{name}" for name in SERVICE_FAMILIES if name != family)
        for path in (PACKAGE / family).rglob("*.py"):
            for line, imported in imports(path, PACKAGE):
                where = f"{path.relative_to(PACKAGE)}:{line} imports {imported}"
                assert imported.split(".")[0] not in WIRE_MODULES, where
                assert not imported.startswith(others), where


_POSTING = frozenset({"post", "urlopen"})


def _posts(node: ast.AST) -> bool:
    """Whether ``node`` calls some object's ``post`` or ``urlopen`` (``session.post(...)``,
    ``pool.urlopen("POST", ...)``)."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _POSTING
    )


def _posting_modules(root: Path = PACKAGE) -> set[str]:
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*.py")
        if any(map(_posts, ast.walk(ast.parse(path.read_text(encoding="utf-8")))))
    }


def _importing(library: str) -> set[str]:
    """The modules below the command line that import ``library`` (or a module of it)."""
    return {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if layer_of(module_name(path, PACKAGE)) < layer_of("transport.cli")
        and any(name.split(".")[0] == library for _, name in imports(path, PACKAGE))
    }


def test_only_the_channel_posts() -> None:
    assert _posting_modules() == {"soap/channel.py"}
    # The command line may name requests' exceptions, as a last resort for its exit codes.
    # The channel's default wire posts with urllib3, and with requests over a caller's session;
    # the TLS layer's session module mounts its adapter on the library's requests session (and
    # its proxy snapshot applies requests' NO_PROXY rules).
    assert _importing("urllib3") == {"soap/channel.py"}
    assert _importing("requests") == {"soap/channel.py", "tls/__init__.py", "tls/session.py"}


@pytest.mark.parametrize(
    "text",
    ["session.post(url, data=body)\n", 'pool.urlopen("POST", url, body=body)\n'],
    ids=["requests", "urllib3"],
)
def test_a_post_elsewhere_is_found(tmp_path: Path, text: str) -> None:
    root = _tree(tmp_path, {"xml.py": text})
    assert _posting_modules(root) == {"xml.py"}


_PARSERS = frozenset({"fromstring", "XML", "parse", "iterparse", "XMLParser", "fromstringlist"})


def _parses(node: ast.AST) -> bool:
    """Whether ``node`` calls one of lxml's parsers (``etree.fromstring(...)``…) directly."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in _PARSERS
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "etree"
    )


def test_only_the_xml_module_calls_a_parser() -> None:
    # Every byte parsed goes through transport.xml's parser: no DTD, no entities, no network.
    parsing = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*.py")
        if any(map(_parses, ast.walk(ast.parse(path.read_text(encoding="utf-8")))))
    }
    assert parsing == {"xml.py"}


def test_the_tls_layer_never_parses_xml() -> None:
    for path in (PACKAGE / "tls").rglob("*.py"):
        for line, imported in imports(path, PACKAGE):
            assert imported.split(".")[0] != "lxml", f"{path.name}:{line}"
            assert imported != "transport.xml", f"{path.name}:{line}"


@pytest.mark.parametrize(
    ("module", "user"),
    [
        ("requests", "from transport.tls import create_session"),  # the default wire is urllib3
        ("zeep", "import transport.soap.wsdl"),  # zeep serves the WSDL-driven client only
    ],
)
def test_the_clients_do_not_import(module: str, user: str) -> None:
    # A new interpreter (this one has imported both through other tests); importing what uses
    # the module afterwards is the control: it does import it.
    code = (
        "import sys, transport, transport.dmp.client, transport.teleservices.insi; "
        f"before = {module!r} in sys.modules; {user}; print(before, {module!r} in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.split() == ["False", "True"]


def test_a_patient_transaction_does_not_import_the_document_modules() -> None:
    # What a new process's first TD0.2 imports (benchmarks/client.py) leaves out the XDS, CDA and
    # XAdES modules and signxml; the control: the names that need them still bring them in.
    lazy = ("transport.dmp.xds", "transport.dmp.cda", "transport.dmp.xades", "signxml")
    code = f"""
import contextlib, sys
import transport.examplepki, transport.config, transport.vihf
from transport.dmp import client
from transport.errors import CisisError
from transport.vihf import INS_TEST_OID, Patient
lazy = {lazy!r}
print(*(name in sys.modules for name in lazy))
assert client.DEFAULT_TYPE.code == "11488-4" and "application/pdf" in client.FORMATS
with contextlib.suppress(CisisError):
    client.Document.from_cda(b"<not-a-cda/>", Patient("279035121518989", INS_TEST_OID))
assert client.DocumentList(()).documents == ()
print(*(name in sys.modules for name in lazy))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.splitlines() == ["False False False False", "True True True True"]
