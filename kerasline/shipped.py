"""The experiments and sample data that ship with kerasline. A folder of the same name in the current directory
comes first, so a project adds or replaces experiments and data without touching the install."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(folder: str) -> Path:
    """`experiments` or `data` as installed: inside the package from a wheel, beside it in a checkout."""
    inside = _PACKAGE / folder
    return inside if inside.is_dir() else _PACKAGE.parent / folder


def find(folder: str, name: str) -> Path:
    """`./<folder>/<name>` where it exists, else the shipped one (which callers check exists)."""
    local = Path(folder) / name
    return local if local.exists() else shipped_dir(folder) / name


def is_shipped(path: Path) -> bool:
    return path.resolve().is_relative_to(_PACKAGE.parent) and not path.resolve().is_relative_to(Path.cwd())
