"""Write files and folders so that a failure never leaves a half-written result behind."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def write_atomic_dir(out: Path, fill, overwrite: bool = False) -> Path:
    """Create `out` by calling fill(tmp_dir) on a temporary sibling and renaming it into place: everything in it
    appears at once, and a replaced folder is swapped whole (so its files are never a mix of two writes)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    try:
        fill(tmp)
        _as_created(tmp)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def clean_stale(out: Path) -> None:
    """Remove the temporary siblings of `out` that a killed process left behind (their names carry its pid)."""
    parent = Path(out).parent
    for stale in [*parent.glob(f".{out.name}.tmp-*"), *parent.glob(f".{out.name}.old-*")]:
        pid = stale.name.rsplit(".", 1)[-1].split("-")[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_atomic_file(path: Path, fill) -> Path:
    """Create file `path` by calling fill(tmp_path) on a temporary sibling and renaming it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        fill(tmp)
        _as_created(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _as_created(path: Path) -> None:
    """Give `path` (and all under it) the modes a plain create would under the umask: a temporary folder is made
    private (0700), and safetensors writes its files 0600, so a saved model was unreadable to anyone else."""
    mask = os.umask(0)
    os.umask(mask)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~mask)
